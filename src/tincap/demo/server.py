"""What demo.py serves: the address and the examples checked, the page of the checkpoint's kind, kept up until Ctrl+C."""

from __future__ import annotations

import errno
import logging
import os
import signal
import socket
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig

from tincap.data.image_files import IMAGE_EXTENSIONS, list_images
from tincap.runtime.errors import InvalidInput, MissingInput, UserError
from tincap.tasks.captioner import Captioner
from tincap.tasks.classifier import Classifier
from tincap.tasks.task import Task, for_task

if TYPE_CHECKING:
    import gradio as gr

PageBuilder = Callable[[Any, DictConfig, list[Path]], "gr.Blocks"]


def example_images(folder: str | None) -> list[Path]:
    """The images directly in `examples=`, in name order; none when it is null."""
    if folder is None:
        return []
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise MissingInput(f"examples={path}: no such folder; expected a folder of images, or examples=null for none")
    files = list_images(path)
    if not files:
        raise InvalidInput(f"examples={path}: the folder holds no {'/'.join(IMAGE_EXTENSIONS[:3])}/... images directly "
                           "in it; point examples= at a folder of images")
    return files


def free_port(host: str, port: int | None) -> int:
    """`port` once it is known to be free on `host`; any free port for 0 or null."""
    if port is not None and (not isinstance(port, int) or not 0 <= port <= 65535):
        raise InvalidInput(f"port={port}: expected a port number 1-65535, or port=0 for any free port")
    try:
        family = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)[0][0]
    except (socket.gaierror, UnicodeError) as exc:
        raise InvalidInput(f"host={host}: not a name or address of this machine ({exc}); expected host=127.0.0.1 "
                           "(this machine only) or host=0.0.0.0 (every network interface)") from None
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server will bind it
        try:
            probe.bind((host, port or 0))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise InvalidInput(f"port={port}: already in use on {host} (another demo?); choose another, e.g. "
                                   f"port={port + 1}, or port=0 for any free port") from None
            raise InvalidInput(f"host={host} port={port}: cannot listen there ({exc.strerror}); expected an address "
                               "of this machine (host=127.0.0.1) and a free port (port=0 for any)") from None
        return probe.getsockname()[1]


def import_gradio() -> None:
    """Load Gradio with its analytics and version check off, so the demo never reaches the internet by itself."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    logging.getLogger("httpx").setLevel(logging.WARNING)  # Gradio's own start-up probes of the page, one line each
    try:
        import gradio  # noqa: F401
    except ImportError as exc:
        raise UserError(f"demo.py needs Gradio, which is not installed ({exc}); install the demo extra: "
                        "pip install -e '.[demo]'") from None


def build_page(task: Task, cfg: DictConfig, examples: list[Path]) -> gr.Blocks:
    """The page of the task's kind (its class, or the nearest base that has one)."""
    import_gradio()
    # imported only now: Gradio is an optional extra (`.[demo]`), whose absence import_gradio turned into a message
    from tincap.demo import captioner_page, classifier_page

    builders: dict[type[Task], PageBuilder] = {Classifier: classifier_page.build, Captioner: captioner_page.build}
    build = for_task(builders, task)
    if build is not None:
        return build(task, cfg, examples)
    kinds = ", ".join(cls.__name__ for cls in builders)
    raise InvalidInput(f"ckpt_path={cfg.ckpt_path} is a {type(task).__name__} checkpoint; demo.py has pages for "
                       f"{kinds} tasks only")


def launch(page: gr.Blocks, host: str, port: int, share: bool) -> tuple[str, str | None]:
    """Serve the page from a background thread: its local URL, and the public one where `share` made one."""
    from tincap.demo import layout  # imports Gradio, which build_page found

    try:
        return layout.launch(page, host, port, share)
    except OSError as exc:  # taken between the check and the launch
        raise InvalidInput(f"port={port}: could not serve on {host} ({exc}); choose another port, or port=0 for "
                           "any free port") from None


def serve(page: gr.Blocks) -> None:
    """Keep the launched page up until Ctrl+C, or SIGTERM (a service manager's stop), then close it cleanly: Gradio
    deletes its copies of the uploads."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # raises KeyboardInterrupt, which block_thread handles
    page.block_thread()
