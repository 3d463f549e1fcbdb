"""The live page of a stream in headless Chromium: the frame is shown, the
top-5 labels on the page are the newest prediction's, the chart is drawn.
Skipped where Chromium is not installed (Debian: apt-get install
chromium)."""
import html.parser
import json
import shutil
import subprocess
import urllib.request

import numpy as np
import pytest

from test_stream import FRAMES, FPS, tiny_model  # noqa: F401
from utils_helpers import smooth_frames
from x3d_plugin.apis.stream import stream_predictions
from x3d_plugin.apis.stream_serve import LiveServer
from x3d_plugin.datasets.demo_data import write_video

CHROMIUM = shutil.which('chromium') or shutil.which('chromium-browser')
NAMES = [f'action {i}' for i in range(8)]


class Top5(html.parser.HTMLParser):
    """The texts of the page's ``li.label`` items."""

    def __init__(self):
        super().__init__()
        self.labels, self._in = [], False

    def handle_starttag(self, tag, attrs):
        self._in = tag == 'li' and ('class', 'label') in attrs
        if self._in:
            self.labels.append('')

    def handle_data(self, data):
        if self._in:
            self.labels[-1] += data

    def handle_endtag(self, tag):
        self._in = False


def chromium(url, tmp_path, *args):
    return subprocess.run(
        [CHROMIUM, '--headless', '--no-sandbox', '--disable-gpu',
         '--disable-background-networking', '--disable-component-update',
         '--no-first-run', f'--user-data-dir={tmp_path / "profile"}',
         '--virtual-time-budget=3000', '--window-size=900,700', *args, url],
        capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(CHROMIUM is None, reason='Chromium is not installed')
def test_page_shows_frame_top5_and_chart(tmp_path):
    video = tmp_path / 'waves.mp4'
    write_video(video, smooth_frames(FRAMES, 48, 64), fps=FPS)
    server = LiveServer(0)
    try:
        preds = stream_predictions(
            tiny_model(), str(video), every=4, label_names=NAMES,
            on_frame=server.update_frame, on_prediction=server.update)
        state = json.loads(urllib.request.urlopen(
            server.url + 'state.json').read())
        assert state['frame'] == preds[-1].frame == 47
        assert state['predictions'] == len(preds)
        assert len(state['history']) == len(preds)
        frame = urllib.request.urlopen(server.url + 'frame.jpg').read()
        assert frame[:2] == b'\xff\xd8'  # a JPEG

        dom = chromium(server.url, tmp_path, '--dump-dom')
        assert dom.returncode == 0, dom.stderr[-2000:]
        page = Top5()
        page.feed(dom.stdout)
        expected = [f"{t['label']} {t['score']:.3f}"
                    for t in preds[-1].topk]
        assert page.labels == expected
        assert 'frame 47 at 3.92 s' in dom.stdout

        shot = tmp_path / 'page.png'
        run = chromium(server.url, tmp_path, f'--screenshot={shot}')
        assert run.returncode == 0, run.stderr[-2000:]
        import cv2
        image = cv2.imread(str(shot))
        assert image.shape[:2] == (700, 900)
        # The frame (480 px wide, the video's colour waves) is drawn: the
        # top-left area of the image is not the blank page background.
        area = image[80:400, 16:496].astype(float)
        assert area.std() > 20
        # The chart: pixels of its first two colours (lines and legend).
        chart = image[420:700].reshape(-1, 3).astype(int)
        blue = np.all(np.abs(chart - [180, 119, 31]) < 40, axis=1).sum()
        orange = np.all(np.abs(chart - [14, 127, 255]) < 40, axis=1).sum()
        assert blue > 50 and orange > 50
    finally:
        server.close()
