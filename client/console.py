"""``yoton-console``: a terminal for a yoton kernel, local or remote.

``yoton-console`` starts a local broker and kernel and attaches;
``yoton-console --existing FILE`` attaches through a connection file;
``yoton-console HOST:PORT --key-file FILE`` attaches by address.

The main thread runs the prompt (readline: line editing, history, Tab completion);
output arrives in the yoton event loop thread and is written above the prompt
(see :mod:`client.render`). The kernel's prompt stream drives the console: after a
line is sent, the next prompt appears when the kernel asks for the next line.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import yoton

from . import __version__
from .client import DISCONNECTED, NO_HEARTBEAT, Client, Output
from .commands import Command, help_text, parse_command
from .completion import DELIMITERS, Completer
from .connection_file import (
    ConnectionFileError,
    ConnectionInfo,
    read_connection_file,
    read_key_file,
)
from .local import LocalBroker, LocalBrokerError
from .render import EchoFilter, Screen, StatusReporter

try:
    import readline
except ImportError:  # pragma: no cover - Windows without pyreadline
    readline = None  # type: ignore[assignment]

__all__ = ["Console", "history_path", "main"]

logger = logging.getLogger("client")

PS1 = ">>> "
PS2 = "... "
#: Prompts of the console itself, when the kernel cannot take a line.
PROMPT_DEAD = "(no kernel) "
PROMPT_DISCONNECTED = "(disconnected) "
PROMPT_BUSY = "(busy) "
#: Seconds an introspection call may take before Tab gives up.
COMPLETE_TIMEOUT = 1.5
#: Seconds to wait for the first kernel status after attaching.
ATTACH_WAIT = 5.0
HISTORY_LENGTH = 10000
#: Seconds after input() started before a prompt change noticed meanwhile is shown.
REFRESH_DELAY = 0.05
#: After a refresh signal, check this much later that the main thread took it.
REFRESH_CHECK = 0.25
_REFRESH_SIGNAL = getattr(signal, "SIGUSR2", None)


def _runs(frame: Any, code: Any, filename: str | None = None) -> bool:
    """Whether ``frame`` or a caller of it runs ``code`` (or code from ``filename``)."""
    while frame is not None:
        if frame.f_code is code or frame.f_code.co_filename == filename:
            return True
        frame = frame.f_back
    return False


class _PromptChanged(Exception):
    """Raised in the main thread to leave input() when the prompt must change."""


def history_path(environ: dict[str, str] | None = None) -> Path:
    """The readline history file ($YOTON_CONSOLE_HISTORY, XDG state dir or ~)."""
    env = os.environ if environ is None else environ
    if env.get("YOTON_CONSOLE_HISTORY"):
        return Path(env["YOTON_CONSOLE_HISTORY"]).expanduser()
    if env.get("XDG_STATE_HOME"):
        return Path(env["XDG_STATE_HOME"]) / "yoton" / "console_history"
    home = env.get("HOME") or os.path.expanduser("~")
    return Path(home) / ".yoton_console_history"


class Console:
    """The interactive loop of yoton-console around an attached :class:`Client`.

    ``local`` is the broker this console started (shut down on Ctrl-D), or None.
    """

    def __init__(
        self,
        client: Client,
        *,
        local: LocalBroker | None = None,
        connection_file: str | None = None,
        history_file: Path | None = None,
        use_readline: bool | None = None,
    ) -> None:
        self.client = client
        self.local = local
        self.connection_file = connection_file
        self.history_file = history_file
        tty = sys.stdin.isatty() and sys.stdout.isatty()
        self.readline = readline if (use_readline or use_readline is None) else None
        if not tty:
            self.readline = None
        get_buffer = self.readline.get_line_buffer if self.readline else (lambda: "")
        self.screen = Screen(sys.stdout, get_buffer, ansi=tty)
        self.echo = EchoFilter()
        self.reporter = StatusReporter()
        self._cond = threading.Condition(threading.RLock())
        self._kernel_prompt: str | None = None  # the kernel waits for a line
        self._escape = False  # Ctrl-C twice while busy: a console prompt
        self._quit = False
        self._kernel_exited = False  # exit() ended the kernel of a local session
        self._exit_code = 0
        self._block: list[str] = []  # lines of the block being typed (for Tab)
        # Main-thread input state (see _read_line and _on_refresh_signal).
        self._in_readline = False
        self._in_hook = False  # readline runs _pre_input_hook
        self._retry_refresh = False  # a refresh signal landed in the hook
        self._shown_prompt: str | None = None
        self._refresh_sent = False
        self._carry = ""
        self._gate_held = False
        self._interrupts = 0  # Ctrl-C presses while waiting for the kernel
        self._callbacks_attached = False
        self._last_completion: tuple[str, Any] | None = None
        self._connection_state: str | None = None  # as last reported
        self._main_ident = threading.main_thread().ident
        self.completer = Completer(
            self._fetch_completions,
            self.readline.get_line_buffer if self.readline else (lambda: ""),
            self.readline.get_begidx if self.readline else (lambda: 0),
            self.readline.get_endidx if self.readline else None,
        )

    # -- setup ----------------------------------------------------------------------

    def _setup_readline(self) -> None:
        rl = self.readline
        if rl is None:
            return
        rl.set_completer_delims(DELIMITERS)
        rl.set_completer(self.completer.complete)
        if "libedit" in (rl.__doc__ or ""):
            rl.parse_and_bind("bind ^I rl_complete")
        else:
            rl.parse_and_bind("tab: complete")
        rl.set_pre_input_hook(self._pre_input_hook)
        rl.set_history_length(HISTORY_LENGTH)
        if self.history_file is not None and self.history_file.exists():
            try:
                rl.read_history_file(str(self.history_file))
            except OSError as err:
                logger.debug("cannot read history: %s", err)
        if _REFRESH_SIGNAL is not None:
            signal.signal(_REFRESH_SIGNAL, self._on_refresh_signal)

    def _save_history(self) -> None:
        if self.readline is None or self.history_file is None:
            return
        try:
            self.history_file.parent.mkdir(parents=True, exist_ok=True)
            self.readline.write_history_file(str(self.history_file))
        except OSError as err:
            logger.debug("cannot write history: %s", err)

    def attach_callbacks(self) -> None:
        """Have the client report to this console (call before connecting)."""
        if self._callbacks_attached:
            return
        self._callbacks_attached = True
        client = self.client
        client.add_output_callback(self._on_output)
        client.add_status_callback(self._on_status)
        client.add_kernel_info_callback(self._on_kernel_info)
        client.add_connection_callback(self._on_connection)

    def _initial_state(self) -> None:
        status = self.client.wait_for_status(timeout=ATTACH_WAIT)
        info = self.client.kernel_info
        if info:
            self.reporter.kernel_info(info)
        with self._cond:
            if status:
                self.reporter.status = status
            if self._kernel_prompt is None:
                if status == "Ready":
                    self._kernel_prompt = PS1
                elif status == "More":
                    self._kernel_prompt = PS2
                elif status == "Input":
                    self._kernel_prompt = ""
            self._cond.notify_all()
        if status is None:
            self.screen.write_line("[yoton] no kernel status yet; waiting for it")
        # Warm up the kernel's completer: jedi loads (and reads the builtins
        # stubs) on first use, which can take longer than a Tab may wait.
        try:
            self.client.complete("str.")
        except yoton.YotonError:
            pass

    # -- events from the client (yoton event loop thread) ---------------------------

    def _on_output(self, output: Output) -> None:
        stream, text = output.stream, output.text
        if stream in ("prompt", "echo"):
            with self._cond:
                if stream == "prompt":
                    self._kernel_prompt = text
                    self._escape = False
                    self._state_changed()
                    return
                shown = self._kernel_prompt or ""
                own = not output.replay and self.echo.is_own(text)
                self._kernel_prompt = None
                self._state_changed()
            if not own:
                self.screen.write(shown + text)
        elif stream == "broker":
            self.screen.write_line("[broker] " + text.rstrip("\n"))
            if self.local is not None and text.startswith("Kernel exited ("):
                # exit() in a kernel this console started ends the session, as
                # it does in python itself.
                with self._cond:
                    self._kernel_exited = True
                    self._state_changed()
        else:
            self.screen.write(text)

    def _on_status(self, status: str) -> None:
        for message in self.reporter.update(status):
            self.screen.write_line(f"[yoton] {message}")
        with self._cond:
            if status == "Dead":
                self._kernel_prompt = None
                self._escape = False
                self._block.clear()
                self.echo.clear()
            self._state_changed()

    def _on_kernel_info(self, info: dict) -> None:
        for message in self.reporter.kernel_info(info):
            self.screen.write_line(f"[yoton] {message}")

    def _on_connection(self, state: str, reason: str) -> None:
        previous, self._connection_state = self._connection_state, state
        if self._quit or previous is None:
            return  # the first report is the attach itself
        if state == NO_HEARTBEAT:
            self.screen.write_line(f"[yoton] broker silent: {reason}")
        elif state == DISCONNECTED:
            self.screen.write_line(
                f"[yoton] connection to the broker lost ({reason});"
                " %reconnect tries again, Ctrl-D leaves"
            )
        elif previous == NO_HEARTBEAT:
            self.screen.write_line("[yoton] the broker answers again")
        with self._cond:
            if state == DISCONNECTED:
                self._kernel_prompt = None
            self._state_changed()

    # -- prompt state ---------------------------------------------------------------

    def _desired_prompt(self) -> str | None:
        """The prompt to show now, or None to wait for the kernel (lock held)."""
        if self._quit or self._kernel_exited:
            return None
        if not self.client.connected:
            return PROMPT_DISCONNECTED
        if self.client.status == "Dead":
            return PROMPT_DEAD
        if self._kernel_prompt is not None:
            return self._kernel_prompt
        if self._escape:
            return PROMPT_BUSY
        return None

    def _state_changed(self) -> None:
        """Wake the main thread; make input() show a new prompt if it changed."""
        with self._cond:
            self._cond.notify_all()
            desired = self._desired_prompt()
            if (
                (desired is not None or self._kernel_exited)
                and self._in_readline
                and desired != self._shown_prompt
                and not self._refresh_sent
                and _REFRESH_SIGNAL is not None
            ):
                self._refresh_sent = True
                signal.pthread_kill(self._main_ident, _REFRESH_SIGNAL)
                # A signal that lands just before readline's select() is only
                # seen after the next key press: check that it was taken.
                yoton.call_later(self._check_refreshed, REFRESH_CHECK)

    def _check_refreshed(self) -> None:
        """Send the refresh signal again if the last one was not taken."""
        with self._cond:
            if not (self._refresh_sent and self._in_readline):
                return
            if self._desired_prompt() == self._shown_prompt and not self._kernel_exited:
                return
            self._refresh_sent = False
            self._state_changed()

    def _on_refresh_signal(self, signum: int, frame: Any) -> None:
        if self._in_hook or _runs(frame, self._pre_input_hook.__func__.__code__):
            # readline would swallow an exception raised in its hook (and the
            # rest of the hook with it): retry once the hook has returned.
            self._refresh_sent = False
            self._retry_refresh = True
            if not _runs(frame, None, yoton.events.__file__):
                # Safe: this thread holds no event-queue lock right now. (When it
                # does, it is the hook itself scheduling the retry.)
                yoton.call_later(self._state_changed, REFRESH_DELAY)
            return
        if self._in_readline and self.readline is not None:
            self._carry = self.readline.get_line_buffer()
            self._in_readline = False
            raise _PromptChanged()
        self._refresh_sent = False  # not in readline (yet): a later change retries

    def _wait_for_prompt(self) -> str | None:
        with self._cond:
            while True:
                if self._quit or self._kernel_exited:
                    return None
                prompt = self._desired_prompt()
                if prompt is not None:
                    return prompt
                self._cond.wait()

    def _fetch_completions(self, source: str) -> Any:
        """Ask the kernel for completions at the end of ``source`` (short timeout).

        A request that timed out is kept: Tab pressed again on the same text
        waits for it instead of asking again (jedi can be slow the first time).
        """
        if not self.client.connected:
            return None
        last = self._last_completion
        if last is not None and last[0] == source and not last[1].cancelled():
            request = last[1]
        else:
            if last is not None and not last[1].done():
                last[1].cancel()
            try:
                request = self.client.complete(source)
            except yoton.YotonError:
                return None
        self._last_completion = (source, request)
        try:
            return request.result(COMPLETE_TIMEOUT)
        except (yoton.YotonError, TimeoutError):
            return None

    # -- reading a line (main thread) -----------------------------------------------

    def _pre_input_hook(self) -> None:
        """readline drew the prompt: from now on output redraws it."""
        self._in_hook = True  # a refresh signal now must not raise (see handler)
        try:
            rl = self.readline
            if self._carry and rl is not None:
                rl.insert_text(self._carry)
                rl.redisplay()
            self._carry = ""
            self.screen.show_prompt(self._shown_prompt)
        finally:
            self._release_gate()
            self._in_readline = True
            with self._cond:
                desired = self._desired_prompt()
                stale = self._kernel_exited or (
                    desired is not None and desired != self._shown_prompt
                )
            self._in_hook = False
            if stale or self._retry_refresh:
                # Changed while input() started; a signal now would land in this
                # hook (where readline swallows exceptions), so send it shortly.
                self._retry_refresh = False
                yoton.call_later(self._state_changed, REFRESH_DELAY)

    def _release_gate(self) -> None:
        """Let output through again (the gate is taken just before input())."""
        if self._gate_held:
            self._gate_held = False
            try:
                self.screen.lock.release()
            except RuntimeError:  # interrupted before it was taken
                pass

    def _read_line(self, prompt: str) -> str:
        """input(prompt) with output kept above it; raises _PromptChanged."""
        status = self.client.status
        self.completer.context = (
            "\n".join(self._block) + "\n" if self._block and status == "More" else ""
        )
        self.screen.begin_input()
        with self._cond:
            self._shown_prompt = prompt
            self._refresh_sent = False
        try:
            if self.readline is not None:
                self._gate_held = True
                self.screen.lock.acquire()  # released by the hook: no output between
            return input(prompt)
        finally:
            self._in_readline = False
            self._release_gate()
            self.screen.show_prompt(None)
            with self._cond:
                self._shown_prompt = None

    # -- the loop -------------------------------------------------------------------

    def run(self) -> int:
        """Run until the user leaves; return the exit code."""
        self._setup_readline()
        self.attach_callbacks()
        self._initial_state()
        try:
            while not self._quit:
                try:
                    self._step()
                except KeyboardInterrupt:  # Ctrl-C between two waits
                    self._interrupt_running()
        finally:
            self._save_history()
        return self._exit_code

    def _step(self) -> None:
        if self._kernel_exited:
            self.leave(shutdown_local=True)
            return
        try:
            prompt = self._wait_for_prompt()
        except KeyboardInterrupt:
            self._interrupt_running()
            return
        if prompt is None:
            return
        try:
            line = self._read_line(prompt)
        except _PromptChanged:
            self.screen.erase_prompt()
            return
        except KeyboardInterrupt:
            self.screen.end_input(echoed_newline=False)
            self._interrupt_at_prompt(prompt)
            return
        except EOFError:
            self.screen.end_input(echoed_newline=False)
            self.leave(shutdown_local=True)
            return
        self.screen.end_input()
        self._interrupts = 0
        self._handle_line(line, prompt)

    def _interrupt_running(self) -> None:
        """Ctrl-C while code runs: interrupt; twice: offer a console prompt."""
        self._interrupts += 1
        try:
            self.client.interrupt()
        except yoton.YotonError as err:
            self.screen.write_line(f"[yoton] cannot interrupt: {err}")
        if self._interrupts == 1 and self.client.status == "Stalled":
            self.screen.write_line(
                "[yoton] interrupt sent; the kernel sees it when the extension"
                " call returns (Ctrl-C again for a console prompt)"
            )
        if self._interrupts >= 2:
            with self._cond:
                if not self._escape and self._kernel_prompt is None:
                    self._escape = True
                    self.screen.write_line(
                        "[yoton] the kernel is still busy; console commands work"
                        " here (%kill, %restart, %help)"
                    )
                self._state_changed()

    def _interrupt_at_prompt(self, prompt: str) -> None:
        """Ctrl-C at a prompt clears the line (and a pending block or input())."""
        status = self.client.status
        local = prompt in (PROMPT_DEAD, PROMPT_DISCONNECTED, PROMPT_BUSY)
        if local:
            if prompt == PROMPT_BUSY:
                self._send_control(self.client.interrupt)
            return
        if status in ("More", "Input") or prompt == PS2:
            with self._cond:
                self._kernel_prompt = None
                self._block.clear()
            self._send_control(self.client.interrupt)
        if status != "Input":
            self.screen.write_line("KeyboardInterrupt")

    def _handle_line(self, line: str, prompt: str) -> None:
        local = prompt in (PROMPT_DEAD, PROMPT_DISCONNECTED, PROMPT_BUSY)
        status = self.client.status
        if local or status not in ("More", "Input"):
            command = parse_command(line)
            if command is not None:
                self.run_command(command)
                return
        if prompt == PROMPT_DISCONNECTED:
            self.screen.write_line(
                "[yoton] not connected: %reconnect tries again, Ctrl-D leaves"
            )
            return
        if prompt == PROMPT_DEAD:
            if line.strip():
                self.screen.write_line(
                    "[yoton] the kernel is not running: %restart starts a new one"
                )
            return
        with self._cond:
            if status == "More":
                self._block.append(line)
            elif status != "Input":
                self._block = [line]
            self._kernel_prompt = None
        self.echo.sent(line)
        try:
            self.client.send_line(line)
        except yoton.YotonError as err:
            self.screen.write_line(f"[yoton] cannot send: {err}")

    # -- console commands -----------------------------------------------------------

    def _send_control(self, action: Any) -> bool:
        try:
            action()
            return True
        except yoton.YotonError as err:
            self.screen.write_line(f"[yoton] failed: {err}")
            return False

    def run_command(self, command: Command) -> None:
        """Run a console command (``%name``)."""
        client = self.client
        name = command.name
        if not command.known:
            self.screen.write_line(
                f"[yoton] unknown console command %{name}; %help lists them"
            )
        elif name == "help":
            self.screen.write(help_text())
        elif name == "status":
            self.screen.write(self.status_text())
        elif name == "interrupt":
            self._send_control(client.interrupt)
        elif name == "terminate":
            self._send_control(client.terminate)
        elif name == "kill":
            self._send_control(client.kill)
        elif name == "restart":
            with self._cond:
                self._kernel_prompt = None
                self._block.clear()
                self.echo.clear()
            self._send_control(client.restart)  # the broker says "Restarting"
        elif name == "reconnect":
            self._reconnect()
        elif name == "detach":
            self.leave(shutdown_local=False)
        elif name == "shutdown":
            self._send_control(client.shutdown)
            self.leave(shutdown_local=True, already_sent=True)

    def _reconnect(self) -> None:
        if self.client.connected:
            self.screen.write_line("[yoton] already connected")
            return
        try:
            self.client.reconnect()
        except (yoton.YotonError, OSError) as err:
            self.screen.write_line(f"[yoton] reconnect failed: {err}")
            return
        self.screen.write_line(f"[yoton] attached again to {self.client.address}")
        self.client.wait_for_status(timeout=ATTACH_WAIT)
        with self._cond:
            if self._kernel_prompt is None and self.client.status == "Ready":
                self._kernel_prompt = PS1
            self._state_changed()

    def status_text(self) -> str:
        """The text of %status."""
        client = self.client
        info = client.kernel_info
        lines = [f"kernel:  {client.status or 'unknown'}"]
        if info:
            lines.append(
                f"         Python {info.get('python_version', '?')}"
                f" ({info.get('implementation', '?')}), pid {info.get('pid', '?')}"
            )
            lines.append(f"         {info.get('executable', '?')}")
            lines.append(f"         cwd {info.get('cwd', '?')}")
        where = f"broker:  {client.address} ({client.connection_state}"
        if client.close_reason:
            where += f": {client.close_reason}"
        lines.append(where + ")")
        if self.local is not None:
            pid = self.local.process.pid if self.local.process else "?"
            lines.append(f"         started by this console (pid {pid})")
        if self.connection_file:
            lines.append(f"         connection file {self.connection_file}")
        return "\n".join(lines) + "\n"

    # -- leaving --------------------------------------------------------------------

    def leave(self, *, shutdown_local: bool, already_sent: bool = False) -> None:
        """Detach; a local broker is shut down if asked (else left running)."""
        with self._cond:
            if self._quit:
                return
            self._quit = True
            self._cond.notify_all()
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C now would leak
        for callback in (
            self._on_output,
            self._on_status,
            self._on_kernel_info,
            self._on_connection,
        ):
            self.client.remove_callback(callback)
        local = self.local
        if local is not None and shutdown_local:
            if not already_sent:
                try:
                    self.client.shutdown()
                except yoton.YotonError:
                    pass
            self.client.close()
            local.wait()
            local.cleanup()
            self.local = None
            return
        self.client.close()
        if local is not None:
            local.detached = True
            self.screen.write_line(
                "[yoton] detached; the kernel keeps running. Attach again with:\n"
                f"  yoton-console --existing {local.connection_file}"
            )
            self.local = None

    def shutdown_local(self) -> None:
        """Stop a broker this console started, at once (errors, signals).

        SIGTERM makes the broker shut down in order by itself (kernel first);
        nothing here waits, so a second signal cannot catch us half-way.
        """
        local, self.local = self.local, None
        if local is None or local.detached:
            return
        if local.running():
            local.process.terminate()
        local.cleanup(force=True)


# -- command line ---------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="yoton-console",
        description=(
            "A Python prompt for a yoton kernel. Without arguments a local broker "
            "and kernel are started; otherwise attach to a running broker."
        ),
    )
    parser.add_argument(
        "address", nargs="?", help="HOST:PORT of a broker (with --key-file)"
    )
    parser.add_argument(
        "--existing",
        metavar="PATH",
        help="attach through the connection file the broker wrote",
    )
    parser.add_argument("--key-file", metavar="PATH", help="file holding the key")
    parser.add_argument(
        "--no-key",
        action="store_true",
        help="connect without a key (only for brokers on loopback started with one)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=5.0,
        help="seconds to try to reach the broker (default 5)",
    )
    parser.add_argument(
        "--history-file",
        metavar="PATH",
        help="readline history (default ~/.yoton_console_history)",
    )
    parser.add_argument(
        "--broker-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for a local broker (repeatable)",
    )
    parser.add_argument("--version", action="version", version=__version__)
    return parser


def _connection_info(args: argparse.Namespace) -> ConnectionInfo | None:
    """The broker to attach to, or None to start a local one."""
    if args.existing:
        if args.address:
            raise ConnectionFileError("Give either --existing or an address, not both.")
        return read_connection_file(os.path.expanduser(args.existing))
    if args.address:
        key = None
        if args.key_file:
            key = read_key_file(os.path.expanduser(args.key_file))
        elif not args.no_key:
            raise ConnectionFileError(
                "An address needs --key-file PATH (or --no-key for a loopback "
                "broker without a key)."
            )
        return ConnectionInfo(args.address, key)
    if args.key_file:
        raise ConnectionFileError("--key-file needs an address.")
    return None


def _error(message: str) -> int:
    print(f"yoton-console: {message}", file=sys.stderr)
    return 1


def _on_terminate(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``yoton-console``."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING, format="yoton-console %(levelname)s: %(message)s"
    )
    try:
        info = _connection_info(args)
    except ConnectionFileError as err:
        return _error(str(err))
    for signum in (signal.SIGTERM, getattr(signal, "SIGHUP", None)):
        if signum is not None:
            signal.signal(signum, _on_terminate)
    local = None
    connection_file = args.existing
    if info is None:
        local = LocalBroker(args=args.broker_arg)
        try:
            info = local.start()
        except (LocalBrokerError, OSError) as err:
            if local.running():
                local.process.kill()
                local.wait()
            local.cleanup()
            return _error(f"could not start a local broker: {err}")
        connection_file = str(local.connection_file)
    try:
        return _attach_and_run(args, info, local, connection_file)
    finally:
        _stop_local(local)


def _attach_and_run(
    args: argparse.Namespace,
    info: ConnectionInfo,
    local: LocalBroker | None,
    connection_file: str | None,
) -> int:
    client = Client(info.address, info.key, timeout=args.timeout, connect=False)
    history = (
        Path(args.history_file).expanduser() if args.history_file else history_path()
    )
    console = Console(
        client, local=local, connection_file=connection_file, history_file=history
    )
    console.attach_callbacks()  # before connecting: the history replay comes first
    try:
        client.connect()
    except yoton.AuthenticationError as err:
        return _error(
            f"the broker at {info.address} refused the key ({err}). "
            "Check the connection file or --key-file."
        )
    except (yoton.ConnectFailedError, OSError) as err:
        return _error(f"cannot reach a broker at {info.address}: {err}")
    try:
        return console.run()
    finally:
        if console.local is not None:  # left by an error or a signal
            console.shutdown_local()
        client.close()


def _stop_local(local: LocalBroker | None) -> None:
    """Stop a local broker that is still ours (not detached, not shut down)."""
    if local is None or local.detached:
        return
    if local.running():
        local.process.terminate()  # the broker stops its kernel on SIGTERM
    local.cleanup(force=True)


if __name__ == "__main__":
    sys.exit(main())
