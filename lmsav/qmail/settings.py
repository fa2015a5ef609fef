"""What lmsav-qmail-queue needs from lmsav.toml and the environment, read in a millisecond.

The wrapper runs once per message, so the few keys it needs — ``[qmail]``, ``[daemon] socket``,
``[paths] run_dir`` — are read by lmsav.plaintoml, without importing ``tomllib`` unless the file
needs it. ``lmsav config check`` remains the validator of the whole file.

qmail starts the wrapper as its own users (qmaild, with whatever HOME tcpserver kept), never at
a terminal: such a process uses the system layout of lmsav.paths, so the file is
/etc/lmsav/lmsav.toml unless $LMSAV_CONFIG names another. Only a person running it at a
terminal gets the full rule of lmsav.paths (imported then, not on the per-message path).
"""

import os

from .. import plaintoml

ENV_CONFIG = "LMSAV_CONFIG"
# paths.SYSTEM_CONFIG_FILE and SYSTEM_RUN_DIR, repeated: importing lmsav.paths costs every
# message more than the rest of this module (tests/qmail/test_settings.py keeps them equal).
SYSTEM_CONFIG = "/etc/lmsav/lmsav.toml"
SYSTEM_RUN_DIR = "/run/lmsav"
WANTED = ("qmail", "daemon", "paths")
# The keys read from each table (None: all of them).
NEEDED = {"qmail": None, "daemon": ("socket",), "paths": ("run_dir",)}

DEFAULTS = {
    "qmail_queue": "/var/qmail/bin/qmail-queue",
    "use_daemon": True,
    "fallback": True,
    "custom_error": False,
    "timeout": 300.0,
}

# Per-connection settings (tcpserver rules, see lmsav-qmail-queue(8)) win over the file.
ENV_QMAILQUEUE = "LMSAV_QMAILQUEUE"
ENV_SOCKET = "LMSAV_SOCKET"
ENV_GROUP = "LMSAV_GROUP"
ENV_BYPASS = "LMSAV_BYPASS"
ENV_CUSTOM_ERROR = "LMSAV_CUSTOM_ERROR"
ENV_FALLBACK = "LMSAV_FALLBACK"
ENV_USE_DAEMON = "LMSAV_USE_DAEMON"


class SettingsError(Exception):
    """The file or a variable cannot be understood; the wrapper defers the message."""


class QmailSettings:
    __slots__ = ("bypass", "config_file", "custom_error", "fallback", "group", "qmail_queue",
                 "socket", "timeout", "use_daemon")

    def __repr__(self) -> str:
        return "QmailSettings(" + ", ".join(f"{k}={getattr(self, k)!r}"
                                            for k in self.__slots__) + ")"


def config_file(env) -> str:
    """$LMSAV_CONFIG, else the file of the layout lmsav.paths picks for a process qmail started:
    the system file, whatever the user and HOME (qmaild's own configuration is never the one
    the administrator means)."""
    if env.get(ENV_CONFIG):
        return env[ENV_CONFIG]
    if not _at_terminal():
        return SYSTEM_CONFIG
    return str(_paths().default_config_file(env))


def default_run_dir(env) -> str:
    """Where the daemon's socket is when the file does not say: /run/lmsav for qmail's users."""
    if not _at_terminal():
        return SYSTEM_RUN_DIR
    return str(_paths().run_dir(env))


def _paths():
    from .. import paths

    paths.mark_started_by_mta()
    return paths


def _at_terminal() -> bool:
    """The test of lmsav.paths, without importing it."""
    return any(os.isatty(fd) for fd in (0, 1, 2))


def load(env=None) -> QmailSettings:
    env = os.environ if env is None else env
    path = config_file(env)
    try:
        with open(path, "rb") as fp:
            data = fp.read()
    except FileNotFoundError:
        if env.get(ENV_CONFIG):
            raise SettingsError(f"{path}: no such file (from ${ENV_CONFIG})") from None
        data = b""
    except OSError as err:
        raise SettingsError(f"{path}: cannot read: {err.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise SettingsError(f"{path}: invalid TOML: not UTF-8 text") from None
    tables = read_tables(text, path)
    q = tables.get("qmail", {})
    s = QmailSettings()
    s.config_file = path
    s.qmail_queue = _path(path, "qmail.qmail_queue", q.get("qmail_queue", DEFAULTS["qmail_queue"]))
    s.use_daemon = _bool(path, "qmail.use_daemon", q.get("use_daemon", DEFAULTS["use_daemon"]))
    s.fallback = _bool(path, "qmail.fallback", q.get("fallback", DEFAULTS["fallback"]))
    s.custom_error = _bool(path, "qmail.custom_error",
                           q.get("custom_error", DEFAULTS["custom_error"]))
    s.timeout = _seconds(path, "qmail.timeout", q.get("timeout", DEFAULTS["timeout"]))
    sock = tables.get("daemon", {}).get("socket", "")
    run_dir = tables.get("paths", {}).get("run_dir", "") or default_run_dir(env)
    s.socket = _path(path, "daemon.socket", sock) if sock else \
        os.path.join(_path(path, "paths.run_dir", run_dir), "clamd.sock")
    # The environment of this connection.
    if env.get(ENV_QMAILQUEUE):
        s.qmail_queue = _path("environment", ENV_QMAILQUEUE, env[ENV_QMAILQUEUE])
    if env.get(ENV_SOCKET):
        s.socket = _path("environment", ENV_SOCKET, env[ENV_SOCKET])
    for var, attr in ((ENV_CUSTOM_ERROR, "custom_error"), (ENV_FALLBACK, "fallback"),
                      (ENV_USE_DAEMON, "use_daemon")):
        if env.get(var, "") != "":
            setattr(s, attr, _flag(var, env[var]))
    s.group = env.get(ENV_GROUP, "")
    s.bypass = _flag(ENV_BYPASS, env[ENV_BYPASS]) if env.get(ENV_BYPASS, "") != "" else False
    return s


def qmail_queue_only(env=None) -> str:
    """The real qmail-queue, for a bypassed connection: the file is read only if it must be."""
    env = os.environ if env is None else env
    if env.get(ENV_QMAILQUEUE):
        return _path("environment", ENV_QMAILQUEUE, env[ENV_QMAILQUEUE])
    return load(env).qmail_queue


# -- the reader ----------------------------------------------------------------------------------

def read_tables(text: str, path: str) -> dict[str, dict]:
    """The ``WANTED`` tables of a TOML document (see lmsav.plaintoml)."""
    try:
        return plaintoml.read_tables(text, path, NEEDED)
    except plaintoml.TomlError as err:
        raise SettingsError(str(err)) from None


def _read_plain(text: str) -> dict[str, dict] | None:
    return plaintoml.read_plain(text, NEEDED)


# -- values --------------------------------------------------------------------------------------

def _path(where: str, key: str, value) -> str:
    if isinstance(value, str):
        value = os.path.expanduser(value)
        if os.path.isabs(value):
            return value
    raise SettingsError(f"{where}: {key} = {value!r}: expected an absolute path")


def _bool(where: str, key: str, value) -> bool:
    if isinstance(value, bool):
        return value
    raise SettingsError(f"{where}: {key} = {value!r}: expected true or false")


_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600}


def _seconds(where: str, key: str, value) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        unit = text[-1:] if text[-1:] in ("s", "m", "h") else ""
        number = text[:len(text) - len(unit)].strip()
        if number.replace(".", "", 1).isdigit():
            return float(number) * _UNITS[unit]
    raise SettingsError(f"{where}: {key} = {value!r}: expected a number of seconds >= 0, or a "
                        "duration like 90s, 2m or 1h")


def _flag(var: str, value: str) -> bool:
    low = value.strip().lower()
    if low in ("1", "yes", "true", "on"):
        return True
    if low in ("0", "no", "false", "off"):
        return False
    raise SettingsError(f"environment: {var}={value!r}: expected 1 or 0")
