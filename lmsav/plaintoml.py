"""A few keys of lmsav.toml read in microseconds, for the commands that run once per message.

Importing ``tomllib`` costs a per-message command more than everything else it does (it pulls in
``re``, ``typing`` and ``datetime``). The keys such a command needs are therefore read by a line
reader that accepts only the plain ``key = value`` forms (a basic string without escapes,
true/false, a number). The moment the file holds anything else that could touch those keys
(multi-line strings, dotted or inline tables, escapes), the file goes to ``tomllib``, so the
result is always what TOML says. ``lmsav config check`` remains the validator of the whole file.
"""


class TomlError(ValueError):
    """The file is not valid TOML, or a wanted name is not a table; the text says where."""


def read_tables(text: str, path: str, needed: dict) -> dict:
    """The tables named in ``needed`` ({table: keys to read, or None for all}) of a document."""
    fast = read_plain(text, needed)
    if fast is not None:
        return fast
    import tomllib

    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise TomlError(f"{path}: invalid TOML: {err}") from None
    out = {}
    for name, keys in needed.items():
        table = doc.get(name, {})
        if not isinstance(table, dict):
            raise TomlError(f"{path}: {name} = ...: expected a table [{name}]")
        out[name] = {k: v for k, v in table.items() if keys is None or k in keys}
    return out


def read_plain(text: str, needed: dict) -> dict | None:
    """The tables when every line that matters is plain; None to ask tomllib."""
    if '"""' in text or "'''" in text:
        return None  # a multi-line string could hold lines that look like tables
    out: dict[str, dict] = {name: {} for name in needed}
    current = None  # the wanted table we are in, or None
    keys = None
    top = True
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] == "#":
            continue
        if line[0] == "[":
            if line.startswith("[["):
                current, top = None, False
                continue
            close = line.find("]")
            if close < 0 or line[close + 1:].strip()[:1] not in ("", "#"):
                return None
            name = line[1:close].strip()
            top = False
            if "." in name or '"' in name or "'" in name:
                if name.split(".")[0].strip(" \"'") in needed:
                    return None  # [qmail.x] or ["qmail"]: let TOML decide
                current = None
                continue
            current = out[name] if name in needed else None
            keys = needed.get(name)
            continue
        key, eq, value = line.partition("=")
        key = key.strip()
        if top and (key.split(".")[0].strip(" \"'") in needed or not eq):
            return None  # qmail.timeout = … or qmail = {…} at the top level
        if current is None:
            continue
        if not eq or not key.replace("_", "").isalnum():
            return None
        if keys is not None and key not in keys:
            continue  # a single-line value of a key not needed here (multi-line ones fail above)
        parsed = _plain_value(value.strip())
        if parsed is _NOT_PLAIN:
            return None
        current[key] = parsed
    return out


_NOT_PLAIN = object()


def _plain_value(value: str):
    if value.startswith('"'):
        close = value.find('"', 1)
        if close < 0 or "\\" in value[:close]:
            return _NOT_PLAIN
        rest = value[close + 1:].strip()
        return value[1:close] if not rest or rest[0] == "#" else _NOT_PLAIN
    word = value.split("#", 1)[0].strip()
    if word == "true":
        return True
    if word == "false":
        return False
    try:
        return int(word) if word.isdigit() else float(word) if word.replace(".", "", 1).isdigit() \
            else _NOT_PLAIN
    except ValueError:
        return _NOT_PLAIN
