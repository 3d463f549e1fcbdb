"""A live source for the stream tests: remux a video file's packets (no
re-encoding, so the decoded frames are the file's own) as MPEG-TS to
stdout or a URL, paced at the file's own rate.

    python stream_source.py VIDEO OUT [--realtime] [--listen]
        [--stall-after N] [--repeat N] [--clients N]

OUT is ``-`` (stdout) or a URL FFmpeg writes (``udp://127.0.0.1:PORT``,
``tcp://127.0.0.1:PORT?listen=1``, or ``http://127.0.0.1:PORT`` with
``--listen``: serve one client).
``--stall-after N`` stops sending after N packets and keeps the output
open (a stalled source) until killed.
"""
import argparse
import http.server
import sys
import time

import av


def push(video, out, realtime=False, listen=False, stall_after=None,
         repeat=1, clients=1):
    if listen and out.startswith('http://'):
        port = int(out.rsplit(':', 1)[1].split('/')[0])
        serve_http(port, video, realtime, stall_after, repeat, clients)
        return
    target = sys.stdout.buffer if out == '-' else out
    mux(video, target, realtime, stall_after, repeat)


def serve_http(port, video, realtime, stall_after, repeat, clients):
    """Serve the stream to ``clients`` HTTP clients, one after the other,
    on 127.0.0.1:``port``."""

    class Handler(http.server.BaseHTTPRequestHandler):
        # Chunked transfer: a live stream of unknown length whose end the
        # client can tell from a connection lost.
        protocol_version = 'HTTP/1.1'

        def do_GET(self):
            self.send_response(200)
            self.send_header('Content-Type', 'video/mp2t')
            self.send_header('Transfer-Encoding', 'chunked')
            self.end_headers()
            mux(video, _Chunked(self.wfile), realtime, stall_after, repeat)
            self.wfile.write(b'0\r\n\r\n')
            self.close_connection = True

    with http.server.HTTPServer(('127.0.0.1', port), Handler) as server:
        for _ in range(clients):
            server.handle_request()


class _Chunked:
    """Writes to ``file`` as HTTP/1.1 chunks."""

    def __init__(self, file):
        self.file = file

    def write(self, data):
        if data:
            self.file.write(b'%x\r\n%s\r\n' % (len(data), bytes(data)))
        return len(data)

    def flush(self):
        self.file.flush()


def mux(video, target, realtime, stall_after, repeat):
    # Each packet goes out as it is muxed, not when FFmpeg's I/O buffer
    # fills: a live source.
    options = {'flush_packets': '1'}
    with av.open(video) as src, av.open(target, mode='w', format='mpegts',
                                        options=options) as dst:
        in_stream = src.streams.video[0]
        out_stream = dst.add_stream_from_template(in_stream)
        sent = 0
        offset = 0  # timestamps of the next repeat follow the last one
        began = time.monotonic()
        for _ in range(repeat):
            src.seek(0)
            last = 0
            for packet in src.demux(in_stream):
                if packet.dts is None:
                    continue
                if realtime:
                    t = float((packet.dts + offset) * packet.time_base)
                    wait = began + t - time.monotonic()
                    if wait > 0:
                        time.sleep(wait)
                if stall_after is not None and sent >= stall_after:
                    time.sleep(3600)
                packet.pts += offset
                packet.dts += offset
                last = max(last, packet.pts + (packet.duration or 1))
                packet.stream = out_stream
                dst.mux(packet)
                sent += 1
                if hasattr(target, 'flush'):
                    target.flush()
            offset = last


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('video')
    parser.add_argument('out')
    parser.add_argument('--realtime', action='store_true')
    parser.add_argument('--listen', action='store_true')
    parser.add_argument('--stall-after', type=int)
    parser.add_argument('--repeat', type=int, default=1)
    parser.add_argument('--clients', type=int, default=1)
    args = parser.parse_args()
    push(args.video, args.out, args.realtime, args.listen, args.stall_after,
         args.repeat, args.clients)


if __name__ == '__main__':
    main()
