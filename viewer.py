"""A live web viewer of a trained avatar (ours or the original release's): orbit and zoom,
a timeline over the dataset's frames, expression sliders (the named coefficients of a dataset
in a named space: jaw open, smile left, ...; else the main axes of its expressions), the body,
snapshots, and export of the frame's Gaussians as .ply and .splat.

    python viewer.py -m output/<id> [--port 8080]     # then open the printed address

The avatar is rendered on the server for each browser's camera (viser shows the images):
with gsplat at the page's size on a GPU, with the PyTorch rasterizer at a reduced size on the
CPU (--max_size). See docs/viewer.md.
"""

from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path

import numpy as np

from arguments import str2bool
from scene.export import check_expression_size, read_run_dataset, run_options
from scene.live_view import (
    LiveAvatar,
    dataset_sets,
    fit_size,
    look_at_of,
    view_intrinsics,
    viser_to_c2w_gl,
)
from scene.render_sets import plan_driving
from scene.run_folder import is_release_run, load_model
from utils.cli import make_parser
from utils.errors import OptionError, run_cli
from utils.execution import resolve_execution

CPU_MAX_SIZE = 256
FPS = 25.0


def build_parser() -> argparse.ArgumentParser:
    p = make_parser(__doc__, allow_abbrev=False)
    p.add_argument("-m", "--model_path", required=True, help="run folder (output/<id>)")
    p.add_argument("-s", "--source_path", default=None,
                   help="the run's dataset (default: the one named in the run's cfg_args)")
    p.add_argument("--driving", default=None,
                   help="another dataset's transforms.json (or its folder) whose expressions "
                        "the timeline can play")
    p.add_argument("--iteration", type=int, default=-1,
                   help="iteration to show; -1 = the latest saved")
    p.add_argument("--test_frames", type=int, default=None,
                   help="the last N frames are the held-out ones (default: the run's setting)")
    p.add_argument("--eval_frames", type=int, default=None,
                   help="the last N of the held-out frames form the test set (default: the "
                        "run's setting)")
    p.add_argument("--port", type=int, default=8080,
                   help="port of the web page; if it is taken, the next free one is used")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (0.0.0.0: let other machines connect)")
    p.add_argument("--device", default="auto", help="torch device: auto, cpu, cuda or cuda:N")
    p.add_argument("--max_size", type=int, default=None, metavar="PIXELS",
                   help=f"long side of the live images (default: {CPU_MAX_SIZE} on the CPU, "
                        "the page's size on a GPU); snapshots use the dataset's size")
    p.add_argument("--open_browser", nargs="?", const=True, type=str2bool, default=False,
                   metavar="true|false", help="open the page in the default browser")
    return p


class RenderLoop(threading.Thread):
    """Renders on one thread: a request marks a client, the loop renders each marked client's
    view once with the state at that time (requests made meanwhile coalesce)."""

    def __init__(self, render_fn):
        super().__init__(daemon=True, name="viewer-render")
        self.render_fn = render_fn
        self.cond = threading.Condition()
        self.pending: dict[int, object] = {}
        self.busy = False
        self.stopped = False

    def request(self, clients) -> None:
        with self.cond:
            self.pending.update({c.client_id: c for c in clients})
            self.cond.notify_all()

    def wait_idle(self, timeout: float) -> None:
        with self.cond:
            self.cond.wait_for(lambda: not self.pending and not self.busy, timeout)

    def stop(self) -> None:
        with self.cond:
            self.stopped = True
            self.cond.notify_all()

    def run(self) -> None:
        while True:
            with self.cond:
                self.cond.wait_for(lambda: self.pending or self.stopped)
                if self.stopped:
                    return
                todo, self.pending, self.busy = list(self.pending.values()), {}, True
            for client in todo:
                try:
                    self.render_fn(client)
                except Exception as err:  # a client that left, a render error: go on
                    print(f"viewer: render failed ({err.__class__.__name__}: {err})")
            with self.cond:
                self.busy = False
                self.cond.notify_all()


class Viewer:
    """The web page (viser GUI) around a :class:`LiveAvatar`."""

    def __init__(self, server, avatar: LiveAvatar, out_dir: Path, max_size: int | None,
                 info_line: str):
        self.server, self.avatar, self.out_dir, self.max_size = server, avatar, out_dir, max_size
        self.gui_lock = threading.RLock()
        self.syncing = False  # set while the code moves sliders (their callbacks then ignore)
        self.rng = np.random.default_rng()
        self.playing = threading.Event()
        self.stopped = threading.Event()
        self.renders = 0
        self.loop = RenderLoop(self._render_client)
        self._set_initial_camera()
        self._build_gui(info_line)
        server.on_client_connect(self._on_connect)
        self.loop.start()
        threading.Thread(target=self._play_loop, daemon=True, name="viewer-play").start()

    # ------------------------------------------------------------------ cameras
    def dataset_camera(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(position, look-at, up) of the mean training camera."""
        return look_at_of(self.avatar.mean_camera, self.avatar.orbit_centre)

    def _set_initial_camera(self) -> None:
        pos, target, up = self.dataset_camera()
        self.server.scene.set_up_direction(tuple(float(x) for x in up))
        cam = self.server.initial_camera
        cam.position, cam.look_at, cam.up, cam.fov = pos, target, up, self.avatar.fov_y

    def reset_camera(self, client) -> None:
        pos, target, up = self.dataset_camera()
        with client.atomic():
            client.camera.fov = self.avatar.fov_y
            client.camera.up_direction = up
            client.camera.position = pos
            client.camera.look_at = target

    def _on_connect(self, client) -> None:
        client.camera.on_update(lambda _cam: self.loop.request([client]))
        self.loop.request([client])

    # ------------------------------------------------------------------ rendering
    def _render_client(self, client) -> None:
        cam = client.camera
        try:
            c2w = viser_to_c2w_gl(cam.wxyz, cam.position)
            w, h = fit_size(cam.image_width, cam.image_height, self.max_size)
            fov = cam.fov
        except AssertionError:  # no camera message yet
            return
        img, seconds = self.avatar.render(c2w, view_intrinsics(fov, w, h))
        client.scene.set_background_image(img, format="jpeg", jpeg_quality=90)
        self.renders += 1
        self.stats.content = (f"**{self.avatar.num_gaussians():,} Gaussians** · last frame "
                              f"{seconds * 1000:.0f} ms at {w}×{h}")

    def rerender(self) -> None:
        self.loop.request(self.server.get_clients().values())

    # ------------------------------------------------------------------ GUI
    def _build_gui(self, info_line: str) -> None:
        gui, a = self.server.gui, self.avatar
        gui.configure_theme(control_width="large", show_share_button=False)
        gui.main_panel.dock_right()
        gui.add_markdown(info_line)
        self.stats = gui.add_markdown("**Gaussians** · waiting for a browser")
        with gui.add_folder("View"):
            gui.add_button("Reset to the dataset's camera").on_click(
                lambda e: self.reset_camera(e.client))
            bg = gui.add_rgb("Background", tuple(int(round(c * 255)) for c in a.background))
            bg.on_update(lambda e: self._set(background=tuple(c / 255 for c in bg.value)))
            head = gui.add_checkbox("Head only", False, disabled=not a.has_body,
                                    hint="hide the body Gaussians" if a.has_body
                                    else "this model has no body")
            head.on_update(lambda e: self._set(head_only=head.value))
        with gui.add_folder("Timeline"):
            names = list(a.sets)
            self.set_choice = gui.add_dropdown("Frames", names, initial_value=a.set_name)
            self.frame_slider = gui.add_slider("Frame", 0, max(0, len(a.sets[a.set_name]) - 1),
                                               1, 0)
            self.frame_label = gui.add_markdown(a.sets[a.set_name].labels[0])
            self.play_button = gui.add_button("Play")
            self.set_choice.on_update(self._on_set)
            self.frame_slider.on_update(self._on_frame)
            self.play_button.on_click(self._on_play)
        with gui.add_folder("Expression"):
            self.sliders = []
            for i, (label, hint) in enumerate(zip(a.space.labels, a.space.hints)):
                lo, hi = float(a.space.low[i]), float(a.space.high[i])
                s = gui.add_slider(label, lo, hi, (hi - lo) / 200 if hi > lo else 1.0,
                                   float(np.clip(a.coeffs[i], lo, hi)), hint=hint)
                s.on_update(lambda e, i=i: self._on_axis(i, e.target.value))
                self.sliders.append(s)
            gui.add_button("Neutral").on_click(lambda e: self._expression(a.neutral))
            gui.add_button("Random").on_click(
                lambda e: self._expression(lambda: a.randomize(self.rng)))
        with gui.add_folder("Save"):
            gui.add_button("Snapshot (PNG)").on_click(self._on_snapshot)
            gui.add_button("Export Gaussians (.ply, .splat)").on_click(self._on_export)
            self.saved = gui.add_markdown(f"Files go to `{self.out_dir}`")

    def _set(self, **state) -> None:
        with self.gui_lock, self.avatar.lock:
            for k, v in state.items():
                setattr(self.avatar, k, v)
        self.rerender()

    def _sync_sliders(self) -> None:
        """Show the avatar's expression coordinates (clipped to the sliders' ranges)."""
        with self.gui_lock:
            self.syncing = True
            try:
                for s, c in zip(self.sliders, self.avatar.coeffs):
                    s.value = float(np.clip(c, s.min, s.max))
            finally:
                self.syncing = False

    def _select(self, name: str, k: int) -> None:
        with self.gui_lock:
            self.avatar.select(name, k)
            self.frame_label.content = self.avatar.sets[name].labels[self.avatar.frame]
            self._sync_sliders()
        self.rerender()

    def _on_set(self, _event) -> None:
        with self.gui_lock:
            if self.syncing:
                return
            n = len(self.avatar.sets[self.set_choice.value])
            self.syncing = True
            try:
                self.frame_slider.value = 0
                self.frame_slider.max = max(0, n - 1)
            finally:
                self.syncing = False
            self._select(self.set_choice.value, 0)

    def _on_frame(self, _event) -> None:
        with self.gui_lock:
            if not self.syncing:
                self._select(self.set_choice.value, int(self.frame_slider.value))

    def _on_axis(self, i: int, value: float) -> None:
        with self.gui_lock:
            if self.syncing:
                return
            self.avatar.set_coefficient(i, value)
        self.rerender()

    def _expression(self, change) -> None:
        with self.gui_lock:
            change()
            self._sync_sliders()
        self.rerender()

    def _on_play(self, _event) -> None:
        if self.playing.is_set():
            self.playing.clear()
            self.play_button.label = "Play"
        else:
            self.playing.set()
            self.play_button.label = "Pause"

    def _play_loop(self) -> None:
        """While playing, step the timeline once per rendered frame, at most at FPS."""
        while not self.stopped.is_set():
            if not self.playing.wait(timeout=0.5):
                continue
            start = time.perf_counter()
            with self.gui_lock:
                n = len(self.avatar.sets[self.set_choice.value])
                self.frame_slider.value = (int(self.frame_slider.value) + 1) % n
            self.loop.wait_idle(timeout=10.0)
            time.sleep(max(0.0, 1.0 / FPS - (time.perf_counter() - start)))

    def _report(self, client, title: str, text: str) -> None:
        """Show ``text`` under the Save buttons and in a notification (without markdown)."""
        self.saved.content = text
        if client is not None:
            client.add_notification(title, text.replace("`", ""), auto_close_seconds=8.0)

    def _on_snapshot(self, event) -> None:
        cam = event.client.camera
        try:
            path = self.avatar.snapshot(self.out_dir, viser_to_c2w_gl(cam.wxyz, cam.position),
                                        cam.fov, cam.aspect)
        except OSError as err:
            return self._report(event.client, "Snapshot failed", f"cannot write: {err}")
        print(f"viewer: snapshot {path}")
        self._report(event.client, "Snapshot saved", f"Snapshot: `{path}`")

    def _on_export(self, event) -> None:
        try:
            ply, splat = self.avatar.export(self.out_dir)
        except OSError as err:
            return self._report(event.client, "Export failed", f"cannot write: {err}")
        print(f"viewer: exported {ply} and {splat}")
        self._report(event.client, "Gaussians exported", f"Exported `{ply}` and `{splat}`")

    def stop(self) -> None:
        self.stopped.set()
        self.playing.clear()
        self.loop.stop()
        self.server.stop()


def start(argv: list[str] | None = None) -> Viewer:
    """Load the run, start the server and print its address (the viewer runs on threads)."""
    import viser

    args = build_parser().parse_args(argv)
    if args.max_size is not None and args.max_size < 16:
        raise OptionError(f"--max_size {args.max_size} is too small; pass 16 or more.")
    if not 0 < args.port < 65536:
        raise OptionError(f"--port {args.port} is not a port number (1 to 65535).")
    split = {"source_path": args.source_path, "test_frames": args.test_frames,
             "eval_frames": args.eval_frames}
    white = run_options(args.model_path, **split)["white_background"]  # reads cfg_args
    release = is_release_run(args.model_path)
    ex = resolve_execution(args.device, "auto", "fp32", "off", exact=release)
    model, it = load_model(args.model_path, args.iteration, device=ex.device)
    model.eval()
    info = read_run_dataset(args.model_path, **split)
    check_expression_size(model, info)
    driving = None
    if args.driving:  # retargeted in a named space (as render.py --driving)
        plan = plan_driving(args.driving, info, model.cfg.exp_dim, use_pose=False)
        driving = list(zip(plan.c2w, plan.exps))
    sets = dataset_sets(info, driving, args.driving or "")
    avatar = LiveAvatar(model, it, info, ex.backend, sets,
                        background=(1.0, 1.0, 1.0) if white else (0.0, 0.0, 0.0))
    max_size = args.max_size or (CPU_MAX_SIZE if ex.device.type == "cpu" else None)
    server = viser.ViserServer(host=args.host, port=args.port, label="GaussianHead",
                               verbose=False)
    port = server.get_port()
    if port != args.port:
        print(f"note: port {args.port} is in use; serving on port {port} instead (choose "
              "another with --port)")
    body = f" + {model.body.num_gaussians} body" if model.body is not None else ""
    note = " (original release)" if release else ""
    info_line = (f"`{args.model_path}` iteration {it}{note}: {model.num_gaussians} head"
                 f"{body} Gaussians, {ex.backend} on {ex.device}")
    viewer = Viewer(server, avatar, Path(args.model_path) / "viewer", max_size, info_line)
    host = "localhost" if args.host in ("0.0.0.0", "127.0.0.1") else args.host
    url = f"http://{host}:{port}"
    size = f"long side {max_size} px" if max_size else "the page's size"
    print(f"Viewing {args.model_path} iteration {it}{note}; rendering with {ex.backend} on "
          f"{ex.device} at {size}")
    if not avatar.deform:
        print(f"note: iteration {it} precedes the deformation network's training: the "
              "expression controls have no effect")
    print(f"Open {url} in a browser (Ctrl+C to stop)", flush=True)
    if args.open_browser:
        import webbrowser

        webbrowser.open(url)
    return viewer


def main(argv: list[str] | None = None) -> int:
    viewer = start(argv)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("viewer stopped")
    finally:
        viewer.stop()
    return 0


if __name__ == "__main__":
    run_cli(main)
