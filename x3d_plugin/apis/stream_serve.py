"""A small web page of a live stream's classification: the newest frame,
the current top-5 and a rolling chart of the top classes' scores.

:class:`LiveServer` serves, on 127.0.0.1 by default:

* ``/``: the page (plain HTML and JavaScript, no outside resources);
* ``/frame.jpg``: the newest frame as JPEG (the page reloads it 5 times a
  second);
* ``/state.json``: the newest prediction and the scores of the last
  ``history`` predictions (the page polls it twice a second).

Feed it from a :class:`x3d_plugin.apis.stream.StreamClassifier` with
``on_frame=server.update_frame`` and ``on_prediction=server.update``.
"""
import http.server
import json
import threading
from typing import Optional

import numpy as np

PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>X3D live</title>
<style>
body { font-family: sans-serif; margin: 16px; background: #fafafa; }
#row { display: flex; gap: 24px; align-items: flex-start; }
#frame { width: 480px; image-rendering: pixelated; background: #000; }
#top5 { font-size: 18px; min-width: 280px; }
#top5 li { margin: 4px 0; }
#status { color: #555; margin: 8px 0; }
</style></head>
<body>
<h2>X3D live</h2>
<div id="status">waiting for the stream</div>
<div id="row">
  <img id="frame" src="frame.jpg" alt="newest frame">
  <ol id="top5"></ol>
</div>
<canvas id="chart" width="760" height="220"></canvas>
<script>
const COLORS = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd'];
function draw(history, classes) {
  const c = document.getElementById('chart'), g = c.getContext('2d');
  g.clearRect(0, 0, c.width, c.height);
  g.strokeStyle = '#999'; g.strokeRect(40, 10, c.width - 200, c.height - 30);
  g.fillStyle = '#333'; g.font = '12px sans-serif';
  g.fillText('1', 28, 16); g.fillText('0', 28, c.height - 20);
  if (history.length === 0) return;
  const w = c.width - 200, h = c.height - 30;
  const x = i => 40 + (history.length === 1 ? w : i * w / (history.length - 1));
  classes.forEach((cls, k) => {
    g.strokeStyle = COLORS[k % COLORS.length]; g.lineWidth = 2;
    g.beginPath();
    history.forEach((p, i) => {
      const y = 10 + h * (1 - p.scores[cls.index]);
      if (i === 0) g.moveTo(x(i), y); else g.lineTo(x(i), y);
    });
    g.stroke();
    g.fillStyle = COLORS[k % COLORS.length];
    g.fillText(cls.label, c.width - 150, 24 + 16 * k);
  });
}
async function poll() {
  try {
    const r = await fetch('state.json', {cache: 'no-store'});
    const s = await r.json();
    const list = document.getElementById('top5');
    list.innerHTML = '';
    (s.topk || []).forEach(t => {
      const li = document.createElement('li');
      li.className = 'label';
      li.textContent = t.label + ' ' + t.score.toFixed(3);
      list.appendChild(li);
    });
    document.getElementById('status').textContent = s.frame === null
      ? 'waiting for the stream'
      : 'frame ' + s.frame + ' at ' + s.stream_time.toFixed(2) + ' s, '
        + s.predictions + ' predictions';
    draw(s.history, (s.topk || []).slice(0, 3));
  } catch (e) {
    document.getElementById('status').textContent = 'stream server gone';
  }
}
setInterval(poll, 500); poll();
setInterval(() => {
  document.getElementById('frame').src = 'frame.jpg?t=' + Date.now();
}, 200);
</script>
</body></html>
"""


class LiveServer:
    """Serve the page of a live stream from a thread.

    Args:
        port (int): TCP port; 0 picks a free one (see :attr:`port`).
        host (str): Address to listen on. Defaults to ``'127.0.0.1'`` (this
            machine only).
        history (int): Predictions kept for the chart. Defaults to 60.
        max_width (int): Frames wider than this are shrunk for the page.
            Defaults to 640.
    """

    def __init__(self, port: int, host: str = '127.0.0.1',
                 history: int = 60, max_width: int = 640) -> None:
        self._lock = threading.Lock()
        self._frame = None
        self._state = dict(frame=None, stream_time=0.0, topk=[],
                           predictions=0, history=[])
        self._history = history
        self._max_width = max_width
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):

            def do_GET(self):
                path = self.path.split('?', 1)[0]
                if path in ('/', '/index.html'):
                    self._send(PAGE.encode(), 'text/html; charset=utf-8')
                elif path == '/state.json':
                    self._send(server.state_json().encode(),
                               'application/json')
                elif path == '/frame.jpg':
                    jpeg = server.jpeg()
                    if jpeg is None:
                        self.send_error(404, 'no frame yet')
                    else:
                        self._send(jpeg, 'image/jpeg')
                else:
                    self.send_error(404)

            def _send(self, body: bytes, kind: str) -> None:
                self.send_response(200)
                self.send_header('Content-Type', kind)
                self.send_header('Content-Length', str(len(body)))
                self.send_header('Cache-Control', 'no-store')
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                """Requests are not logged (the page polls)."""

        self._server = http.server.ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self.host = host
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f'http://{self.host}:{self.port}/'

    def update_frame(self, frame, time_s: float = 0.0) -> None:
        """Show ``frame`` (a PyAV ``VideoFrame``): only a reference is kept;
        it is encoded when the page asks for it."""
        with self._lock:
            self._frame = frame

    def update(self, prediction) -> None:
        """Show ``prediction`` (a :class:`~x3d_plugin.apis.stream.Prediction`)."""
        with self._lock:
            state = self._state
            state['frame'] = prediction.frame
            state['stream_time'] = prediction.stream_time
            state['topk'] = prediction.topk[:5]
            state['predictions'] += 1
            state['history'].append(dict(
                stream_time=prediction.stream_time,
                scores=[round(float(s), 5) for s in prediction.scores]))
            del state['history'][:-self._history]

    def state_json(self) -> str:
        with self._lock:
            return json.dumps(self._state)

    def jpeg(self) -> Optional[bytes]:
        """The newest frame as JPEG (None before the first)."""
        import cv2
        with self._lock:
            frame = self._frame
        if frame is None:
            return None
        width = min(frame.width, self._max_width) // 2 * 2
        height = max(2, round(frame.height * width / frame.width))
        image = frame.to_ndarray(width=width, height=height, format='bgr24')
        ok, data = cv2.imencode('.jpg', np.ascontiguousarray(image))
        return data.tobytes() if ok else None

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
