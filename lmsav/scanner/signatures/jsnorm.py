"""ClamAV's JavaScript normaliser: the "javascript" view of the scripts in an HTML file.

Each script is cut into tokens, declared names are renamed ``n000``, ``n001`` … per scope,
adjacent string literals joined with '+' are folded, ``unescape("…")`` is decoded, and the usual
packers (``eval(…)``, Dean Edwards' ``function(p,a,c,k,e,r|d)``, scriptasylum's ``dF(…)``) are
unpacked and normalised in turn. The output is lower case, one space only between two
alphanumeric tokens, each script as ``<script>…</script>``, scripts separated by a newline. It
follows libclamav's js-norm.c closely, quirks included, because signatures are written against
exactly this text.
"""

from __future__ import annotations

from ..limits import check_running_time

# Token types (only the ones the normaliser reasons about need distinct values).
(T_ERROR, T_IDENT, T_UNNORM, T_STRING, T_INT, T_FLOAT, T_FUNCTION, T_VAR, T_PAR_OPEN,
 T_PAR_CLOSE, T_CURLY_OPEN, T_CURLY_CLOSE, T_BRACKET_OPEN, T_BRACKET_CLOSE, T_COMMA,
 T_SEMICOLON, T_DOT, T_PLUS, T_OTHER) = range(19)

KEYWORDS = frozenset(b"""
break case catch continue default delete do else finally for function if in instanceof new
return switch this throw try typeof var void while with null true false abstract boolean byte
char class const debugger double enum export extends final float goto implements import int
interface long native package private protected public short static super synchronized throws
transient volatile""".split())
OPERATORS = frozenset(b"""
= + === >>> !== << <= == >= >> || -- != && ++ *= /= %= += -= <<= >>= >>>= &= ^= |= & : / ! > <
- * | % ? ~ ^""".split())
_SPECIAL = {0x5B: T_BRACKET_OPEN, 0x5D: T_BRACKET_CLOSE, 0x2C: T_COMMA, 0x7B: T_CURLY_OPEN,
            0x7D: T_CURLY_CLOSE, 0x28: T_PAR_OPEN, 0x29: T_PAR_CLOSE, 0x2E: T_DOT,
            0x3B: T_SEMICOLON}

# Character classes of the tokenizer (js-norm.c's ctype and id_ctype).
WS, SLASH, OP, DQUOTE, SQUOTE, DIGIT, IDSTART, SPECIAL, NOP = range(9)
_CTYPE = [NOP] * 256
for _c in (9, 10, 11, 13, 32):
    _CTYPE[_c] = WS
for _c in b"!%&*+-:<=>?^|~":
    _CTYPE[_c] = OP
for _c in b"$\\_ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz":
    _CTYPE[_c] = IDSTART
for _c in b"0123456789":
    _CTYPE[_c] = DIGIT
for _c in _SPECIAL:
    _CTYPE[_c] = SPECIAL
_CTYPE[0x2F] = SLASH
_CTYPE[0x22] = DQUOTE
_CTYPE[0x27] = SQUOTE
_ID_CHARS = frozenset(b"$_0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_ALNUM = frozenset(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_LOWER = bytes(c + 32 if 65 <= c <= 90 else c for c in range(256))
_HEX = {c: int(chr(c), 16) for c in b"0123456789abcdefABCDEF"}
_OUT = bytes(32 if c in b" \t\n\v\f\r" else _LOWER[c] for c in range(256))  # buf_outs

MAX_DECODES = 4096  # unpackings per script (see Script.decode)
# Memory: a token costs about 100 bytes, fifty times a short token's text. A script is written
# out and let go every MAX_SCRIPT_TOKENS tokens (Script.flush); a text above MAX_UNPACK_TEXT
# bytes, or any text once MAX_HELD_TOKENS are held, is left packed (Script.decode).
MAX_SCRIPT_TOKENS = 1 << 18
MAX_HELD_TOKENS = 1 << 19
MAX_UNPACK_TEXT = 1 << 19
TOKENS_PER_TIME_CHECK = 1 << 14  # the scan's clock is read this often while tokenising
PIECES_PER_TIME_CHECK = 128  # … and this often while feeding a script's 8 KiB pieces
OUTPUT_SLICE = 1 << 20  # long token texts are written in slices: no second copy of a string

# Tokenizer states.
INITIAL, DQSTRING, SQSTRING, IDENTIFIER, MULTI_COMMENT, NUMBER, LINE_COMMENT, DUMMY = range(8)
# Scope states while reading declarations.
BASE, INSIDE_VAR, INSIDE_INIT, WAIT_NAME, WAIT_PARAMS, INSIDE_DECL = range(6)


def _hex(c: int) -> int:
    return _HEX.get(c, -1)


def _hexpair(a: int, b: int) -> int:
    return ((max(_hex(a), 0) << 4) | _hex(b)) & 0xFF  # a bad last digit sets every bit


def _utf8(code: int) -> bytes:
    code &= 0xFFFF
    if not code:
        return b"\x01"  # libclamav never writes NUL
    if code < 0x80:
        return bytes([code])
    if code < 0x800:
        return bytes([0xC0 | code >> 6, 0x80 | code & 0x3F])
    return bytes([0xE0 | code >> 12, 0x80 | (code >> 6) & 0x3F, 0x80 | code & 0x3F])


def _unicode(text: bytes, i: int) -> int:
    v = 0
    for k, c in enumerate(text[i:i + 4]):
        h = _hex(c)
        v = (v << 4) | (max(h, 0) if k < 3 else h)
    return v & 0xFFFF if v >= 0 else 0xFFFF


def append_string(out: bytearray, text: bytes) -> None:
    """String literal contents with JavaScript escapes decoded (cli_textbuffer_append_normalize)."""
    i, size = 0, len(text)
    while i < size:
        escape = text.find(b"\\", i)
        if escape != i:  # the run up to the next backslash as is, NUL written as 0x01
            stop = size if escape < 0 else escape
            out += text[i:stop].replace(b"\0", b"\x01")
            i = stop
            continue
        c = text[i]
        if c == 0x5C and i + 1 < size:
            i += 1
            e = text[i]
            if e == 0x30:
                c = 0
            elif e in b"btnvfr":
                c = {0x62: 8, 0x74: 9, 0x6E: 10, 0x76: 11, 0x66: 12, 0x72: 13}[e]
            elif e == 0x78:
                if i + 2 < size:
                    c = _hexpair(text[i + 1], text[i + 2])
                i += 2
            elif e == 0x75:
                if i + 4 < size:
                    out += _utf8(_unicode(text, i + 1))
                    i += 5
                    continue
            else:
                c = e
        out.append(c or 1)
        i += 1


def unescape(text: bytes) -> bytes:
    """JavaScript's unescape(): %XX and %uXXXX (as UTF-8); NUL becomes 0x01."""
    out = bytearray()
    k, size = 0, len(text)
    while k < size:
        c = text[k]
        if c == 0x25:
            if (k + 5 >= size or text[k + 1] != 0x75
                    or any(x not in _HEX for x in text[k + 2:k + 6])):
                if k + 2 < size and text[k + 1] in _HEX and text[k + 2] in _HEX:
                    c = _hexpair(text[k + 1], text[k + 2])
                    k += 2
            else:
                out += _utf8(_unicode(text, k + 2))
                k += 6
                continue
        out.append(c or 1)
        k += 1
    return bytes(out)


class Token:
    __slots__ = ("scope", "text", "type", "value")

    def __init__(self, type_: int, text: bytes | None = None, value=None, scope=None):
        self.type = type_
        self.text = text
        self.value = value
        self.scope = scope  # FUNCTION tokens: the scope they open (None: a scope's end)


class Scope:
    __slots__ = ("blocks", "brackets", "last_token", "names", "parent", "state")

    def __init__(self, parent: Scope | None):
        self.names: dict[bytes, int] = {}
        self.parent = parent
        self.state = BASE
        self.last_token = -1
        self.brackets = 0
        self.blocks = 0

    def lookup(self, name: bytes) -> int:
        scope = self
        while scope is not None:
            value = scope.names.get(name, -1)
            if value != -1:
                return value
            scope = scope.parent
        return -1


class _Scanner:
    def __init__(self):
        self.state = INITIAL
        self.buf = bytearray()
        self.data = b""
        self.pos = 0
        self.lastpos = -1
        self.last_state = DUMMY

    def feed(self, data: bytes) -> None:
        self.data, self.pos, self.lastpos, self.last_state = data, 0, -1, DUMMY

    def next(self) -> Token | None:
        """The next complete token of the current buffer, or None at its end (yylex)."""
        data, size = self.data, len(self.data)
        if self.pos == self.lastpos and self.last_state == self.state:
            self.pos += 1  # no progress since last time: skip a character
        self.lastpos, self.last_state = self.pos, self.state
        while self.pos < size:
            state = self.state
            if state == INITIAL:
                self.buf = bytearray()
                c = data[self.pos]
                self.pos += 1
                kind = _CTYPE[c]
                if kind in (WS, NOP):
                    continue
                if kind == SLASH:
                    if self.pos < size and data[self.pos] in (0x2A, 0x2F):
                        self.state = MULTI_COMMENT if data[self.pos] == 0x2A else LINE_COMMENT
                        self.pos += 1
                        continue
                    self.pos -= 1
                    return self.operator()
                if kind == OP:
                    self.pos -= 1
                    return self.operator()
                if kind == DQUOTE:
                    return self.string(0x22, DQSTRING)
                if kind == SQUOTE:
                    return self.string(0x27, SQSTRING)
                if kind == DIGIT:
                    self.pos -= 1
                    return self.number()
                if kind == IDSTART:
                    self.pos -= 1
                    return self.identifier()
                return Token(_SPECIAL[c], bytes([c]))
            if state == DQSTRING:
                return self.string(0x22, DQSTRING)
            if state == SQSTRING:
                return self.string(0x27, SQSTRING)
            if state == IDENTIFIER:
                return self.identifier()
            if state == NUMBER:
                return self.number()
            if state == MULTI_COMMENT:
                end = data.find(b"*/", self.pos)
                if end >= 0:
                    self.state = INITIAL
                    self.pos = end + 2
                else:
                    self.pos = max(size, self.pos + 1)
                continue
            # LINE_COMMENT: up to a newline or a space (the HTML normaliser turned newlines
            # into spaces), or the end of this buffer.
            while self.pos < size and data[self.pos] not in (0x0A, 0x20):
                self.pos += 1
            self.state = INITIAL
        return None

    def operator(self) -> Token:
        data = self.data
        for length in range(min(5, len(data) - self.pos), 0, -1):
            text = data[self.pos:self.pos + length]
            if text in OPERATORS:
                self.pos += length
                return Token(T_PLUS if text == b"+" else T_OTHER, text)
        self.pos += 1
        return Token(T_ERROR)

    def string(self, quote: int, state: int) -> Token | None:
        data, start = self.data, self.pos
        end = start
        while True:
            end = data.find(bytes([quote]), end)
            if end > start and data[end - 1] == 0x5C:
                end += 1
                continue
            break
        if end >= 0:
            append_string(self.buf, data[start:end])
            self.pos = end + 1
            self.state = INITIAL
            text, self.buf = self.buf, bytearray()  # handed over, not copied
            return Token(T_STRING, text)
        append_string(self.buf, data[start:])
        self.pos = len(data)
        self.state = state
        return None

    def number(self) -> Token | None:
        data = self.data
        is_float = False  # sic: forgotten when a number continues in the next chunk
        while self.pos < len(data):
            c = data[self.pos]
            self.pos += 1
            if 0x30 <= c <= 0x39:
                self.buf.append(c)
                continue
            if c == 0x2E and not is_float:
                is_float = True
                self.buf.append(c)
                continue
            if c in (0x65, 0x45) and is_float:
                self.buf.append(c)
                if self.pos < len(data):
                    c = data[self.pos]
                    self.pos += 1
                    if c in (0x2B, 0x2D) or 0x30 <= c <= 0x39:
                        self.buf.append(c)
                        continue
            self.pos -= 1
            self.state = INITIAL
            if is_float:
                return Token(T_FLOAT, value=_atof(bytes(self.buf)))
            return Token(T_INT, value=_atoi(bytes(self.buf)))
        self.state = NUMBER
        return None

    def identifier(self) -> Token | None:
        data = self.data
        self.state = INITIAL
        while self.pos < len(data):
            c = data[self.pos]
            self.pos += 1
            if c in _ID_CHARS:
                self.buf.append(c)
                continue
            if c == 0x5C:  # "\u" keeps the backslash, drops the 'u'; a lone '\' is dropped
                if self.pos < len(data):
                    following = data[self.pos]
                    self.pos += 1
                    if following == 0x75:
                        self.buf.append(c)
                        continue
                else:
                    self.pos += 1
            self.pos -= 1
            name = bytes(self.buf)
            if name in KEYWORDS:
                kind = {b"function": T_FUNCTION, b"var": T_VAR}.get(name, T_OTHER)
                return Token(kind, name)
            return Token(T_IDENT, name)
        self.state = IDENTIFIER
        return None


def _atoi(text: bytes) -> int:
    value = int(text or b"0")
    value = min(value, (1 << 63) - 1) & 0xFFFFFFFF  # atoi: strtol, then cut to an int
    return value - (1 << 32) if value >= 1 << 31 else value


def _atof(text: bytes) -> float:
    body = text.rstrip(b"eE+-")
    try:
        return float(body) if body not in (b"", b".") else 0.0
    except ValueError:
        return 0.0


class Script:
    """One script being normalised (a parser_state)."""

    def __init__(self):
        self.scanner = _Scanner()
        self.global_scope = Scope(None)
        self.current = self.global_scope
        self.tokens: list[Token] = []
        self.uniq = 0
        self.depth = 0
        self.read = 0  # tokens read, for the time checks
        # How far the output has got, for a script written in parts (flush).
        self.started = False
        self.written_scope = self.global_scope
        self.last_written = 0
        self.open_parens = 0

    def feed(self, data: bytes) -> None:
        """Tokenise more text, tracking declarations per scope (cli_js_process_buffer)."""
        self.scanner.feed(data)
        current = self.current
        while True:
            token = self.scanner.next()
            if token is None:
                break
            self.read += 1
            if self.read % TOKENS_PER_TIME_CHECK == 0:
                check_running_time()
            kind = token.type
            if kind == T_VAR:
                current.state = INSIDE_VAR
            elif kind == T_IDENT:
                if current.last_token == T_DOT:
                    token.type = T_UNNORM  # a member name: kept as written
                elif current.state in (WAIT_PARAMS, BASE, INSIDE_INIT):
                    current.names.setdefault(token.text, -1)
                elif current.state in (INSIDE_VAR, INSIDE_DECL):
                    current.names[token.text] = self.uniq
                    self.uniq += 1
                    current.state = INSIDE_INIT
                    current.brackets = 0
                elif current.state == WAIT_NAME:
                    current.names[token.text] = self.uniq
                    self.uniq += 1
                    current.state = WAIT_PARAMS
            elif kind == T_PAR_OPEN:
                if current.state in (WAIT_NAME, WAIT_PARAMS):
                    current.state = INSIDE_DECL
            elif kind == T_PAR_CLOSE:
                if current.state == WAIT_PARAMS:
                    current.state = BASE
            elif kind == T_CURLY_OPEN:
                if current.state in (WAIT_NAME, WAIT_PARAMS, INSIDE_DECL):
                    current.state = BASE
                current.blocks += 1
            elif kind == T_CURLY_CLOSE:
                if current.blocks > 0:
                    current.blocks -= 1
                if not current.blocks and current.parent is not None:
                    self.tokens.append(token)
                    token = Token(T_FUNCTION, b"}", scope=None)  # marks the scope's end
                    self.current = current = current.parent
            elif kind == T_BRACKET_OPEN:
                current.brackets += 1
            elif kind == T_BRACKET_CLOSE:
                if current.brackets > 0:
                    current.brackets -= 1
            elif kind == T_COMMA:
                if current.state == INSIDE_INIT and not current.brackets and not current.blocks:
                    current.state = INSIDE_VAR
            elif kind == T_SEMICOLON:
                if not current.brackets and not current.blocks:
                    current.state = BASE
            elif kind == T_FUNCTION:
                current = Scope(self.current)
                self.current = current
                current.state = WAIT_NAME
                token.scope = current
            elif kind == T_STRING:
                tokens = self.tokens
                if (len(tokens) > 1 and tokens[-1].type == T_PLUS
                        and tokens[-2].type == T_STRING):
                    tokens.pop()
                    if not isinstance(tokens[-1].text, bytearray):  # grows in place from now
                        tokens[-1].text = bytearray(tokens[-1].text or b"")
                    tokens[-1].text += token.text
                    continue
            self.tokens.append(token)
            current.last_token = kind

    def done(self) -> None:
        """Close what is left open, then fold and decode (cli_js_parse_done)."""
        if self.scanner.state in (DQSTRING, SQSTRING):
            self.feed(b'"' if self.scanner.state == DQSTRING else b"'")
        self.tokens += [Token(T_PAR_CLOSE, b")") for _ in range(self._open_parens())]
        self.fold_unescape()
        self.decode()

    def flush(self, out: bytearray) -> None:
        """Fold, decode and write the tokens held so far, and let them go: a script of
        millions of tokens is normalised in parts. Scopes, names and open parentheses carry
        on into the rest; only what spans the cut (a folded string, an eval call) is read as
        two pieces."""
        feeding, scanner = self.current, self.scanner
        # Unpacked texts are read apart from the unfinished stream: their own scanner, and the
        # declaration state of the scopes being fed put back afterwards.
        saved = []
        scope = feeding
        while scope is not None:
            saved.append((scope, scope.state, scope.last_token, scope.brackets, scope.blocks))
            scope = scope.parent
        self.open_parens = self._open_parens()
        self.scanner = _Scanner()
        try:
            self.fold_unescape()
            self.decode()
            self._write_tokens(out)
        finally:
            self.current, self.scanner = feeding, scanner
            for scope, *state in saved:
                scope.state, scope.last_token, scope.brackets, scope.blocks = state

    def _open_parens(self) -> int:
        balance = self.open_parens
        for token in self.tokens:
            if token.type == T_PAR_OPEN:
                balance += 1
            elif token.type == T_PAR_CLOSE and balance > 0:
                balance -= 1
        return balance

    def fold_unescape(self) -> None:
        """``unescape ( "…" )`` (four tokens, whatever the fourth) becomes the decoded string."""
        tokens, out, i = self.tokens, [], 0
        while i < len(tokens):
            if (i + 3 < len(tokens) and tokens[i].type == T_IDENT
                    and tokens[i].text == b"unescape" and tokens[i + 1].type == T_PAR_OPEN
                    and tokens[i + 2].type == T_STRING):
                out.append(Token(T_STRING, unescape(bytes(tokens[i + 2].text or b""))))
                i += 4
            else:
                out.append(tokens[i])
                i += 1
        self.tokens = out

    def decode(self) -> None:
        """Unpack eval("…"), packer functions and dF("…"), normalising what they hide.

        Each unpacking rewrites the token list; past MAX_DECODES in one script (thousands of
        eval calls, a denial of service rather than a packer) the rest is left packed, as is a
        text above MAX_UNPACK_TEXT or any text once MAX_HELD_TOKENS are held (memory)."""
        i = 0
        decodes = 0
        while i < len(self.tokens):
            tokens = self.tokens
            text, begin, end, append = None, 0, 0, False
            token = tokens[i]
            if token.type == T_FUNCTION and i + 13 < len(tokens):
                name = None
                i += 1
                if tokens[i].type == T_IDENT:
                    name = tokens[i].text
                    i += 1
                if _packer_params(tokens, i):
                    text, begin, end = _unpack(tokens, i, name)
            elif (i + 2 < len(tokens) and token.type == T_IDENT and token.text == b"dF"
                  and tokens[i + 1].type == T_PAR_OPEN):
                if tokens[i + 2].type == T_STRING and tokens[i + 2].text:
                    text, begin, end = _decode_df(bytes(tokens[i + 2].text)), i, i + 4
                    append = True
            elif (i + 2 < len(tokens) and token.type == T_IDENT and token.text == b"eval"
                  and tokens[i + 1].type == T_PAR_OPEN):
                if (i + 3 < len(tokens) and tokens[i + 2].type == T_STRING
                        and tokens[i + 2].text is not None and tokens[i + 3].type == T_PAR_CLOSE):
                    text, begin, end = bytes(tokens[i + 2].text), i, i + 4
            if (end > begin and text is not None and decodes < MAX_DECODES
                    and len(text) <= MAX_UNPACK_TEXT and len(tokens) <= MAX_HELD_TOKENS):
                decodes += 1
                if end < len(tokens) and tokens[end].type == T_SEMICOLON:
                    end += 1
                parent = self.tokens
                self.tokens = []
                self.depth += 1
                if self.depth <= 16:
                    self.feed(text)
                    self.depth -= 1
                inner = self.tokens
                if begin < len(parent) and end <= len(parent):
                    if append:
                        parent[begin:end] = []
                        parent += inner
                    else:
                        parent[begin:end] = inner
                self.tokens = parent
            if i < len(self.tokens):
                self._enter(self.tokens[i])
            i += 1

    def _enter(self, token: Token) -> bool:
        """Follow scopes while walking tokens; False for a scope's end marker."""
        if token.type == T_FUNCTION:
            if token.scope is not None:
                self.current = token.scope
            else:
                if self.current.parent is not None:
                    self.current = self.current.parent
                return False
        return True

    def output(self) -> bytes:
        out = bytearray()
        self.write(out)
        return bytes(out)

    def write(self, out: bytearray) -> None:
        """Append the normalised script (or its rest, after flush) to ``out``."""
        self._write_tokens(out)
        if not out.endswith(b"</script>"):
            out += b"</script>"

    def _write_tokens(self, out: bytearray) -> None:
        """Write the tokens held and let them go (a string token of tens of MiB is released
        while it is written)."""
        if not self.started:
            out += b"<script>"
            self.started = True
        last = self.last_written
        self.current = self.written_scope
        tokens, self.tokens = self.tokens, []
        for i, token in enumerate(tokens):
            tokens[i] = None
            if self._enter(token):
                last = _write(token, self.current, out, last)
        self.written_scope, self.last_written = self.current, last


def _packer_params(tokens: list[Token], i: int) -> bool:
    """match_parameters against (p,a,c,k,e,r|d): libclamav only ever compares p, a and c."""
    if i >= len(tokens) or tokens[i].type != T_PAR_OPEN:
        return False
    k = i + 1
    for name in (b"p", b"a", b"c"):
        if k >= len(tokens) or tokens[k].type != T_IDENT or tokens[k].text != name:
            return False
        k += 1
        if k >= len(tokens) or tokens[k].type != T_COMMA:
            return False
        k += 1
    return True


def _unpack(tokens: list[Token], start: int, name: bytes | None):
    """Dean Edwards' packer: find the call's six arguments and expand p's words from k."""
    nesting, i = 1, start
    while i < len(tokens):
        if tokens[i].type == T_FUNCTION:
            nesting += 1 if tokens[i].scope is not None else -1
            if not nesting:
                break
        i += 1
    if nesting:
        return None, 0, 0
    out = bytearray()
    first = last = None

    def arguments(i: int):
        params = []
        for j in range(6):
            if i >= len(tokens):
                break
            params.append(i)
            i += 1
            stop = T_COMMA if j != 5 else T_PAR_CLOSE
            while i < len(tokens) and tokens[i].type != stop:
                i += 1
            i += 1
        return params, i

    if name is not None:
        while i + 2 < len(tokens):
            if (tokens[i].type == T_IDENT and tokens[i].text == name
                    and tokens[i + 1].type == T_PAR_OPEN):
                params, i = arguments(i + 2)
                if len(params) == 6:
                    first = params[0] if first is None else first
                    last = params[5]
                    _decode_de(tokens, params, out)
            i += 1
    else:
        while i < len(tokens) and tokens[i].type != T_PAR_OPEN:
            i += 1
        i += 1
        if i >= len(tokens):
            return None, 0, 0
        params, i = arguments(i)
        if len(params) == 6:
            first, last = params[0], params[5]
            _decode_de(tokens, params, out)
    if first is None or last is None:
        return None, 0, 0
    end = last + 1
    if (end + 2 < len(tokens) and tokens[end].type == T_BRACKET_OPEN
            and tokens[end + 1].type == T_BRACKET_CLOSE and tokens[end + 2].type == T_PAR_CLOSE):
        end += 3
    elif end < len(tokens):
        end += 1
    return bytes(out), first, end


def _decode_de(tokens: list[Token], params: list[int], out: bytearray) -> None:
    p_token, a_token, k_token = tokens[params[0]], tokens[params[1]], tokens[params[3]]
    p = p_token.text if p_token.type not in (T_FUNCTION, T_INT, T_FLOAT) else None
    k = k_token.text if k_token.type in (T_STRING, T_UNNORM) else None
    if p is None or k is None:
        return
    a = a_token.value if a_token.type == T_INT else -1
    words = k.split(b"|")
    pos, size = 0, len(p)
    while True:
        while pos < size and p[pos] not in _ALNUM:
            if p[pos] == 0x5C and pos + 1 < size and p[pos + 1] in (0x27, 0x22):
                pos += 1
            else:
                out.append(p[pos])
                pos += 1
        if pos >= size:
            break
        value, start = 0, pos
        while pos < size and p[pos] in _ALNUM:
            v = p[pos]
            pos += 1
            digit = 10 + v - 0x61 if v >= 0x61 else 36 + v - 0x41 if v >= 0x41 else v - 0x30
            value = (value * a + digit) & 0xFFFFFFFF
        if value >= len(words) or not words[value]:
            out += p[start:pos]
        else:
            out += words[value]
        if pos >= size:
            break


def _decode_df(text: bytes) -> bytes:
    """scriptasylum's encoder: unescape, shift every byte back by the last digit, unescape."""
    shift = (text[-1] - 0x30) & 0xFF
    once = unescape(text[:-1])
    return unescape(bytes((c - shift) & 0xFF for c in once).split(b"\0")[0])


def _write(token: Token, scope: Scope, out: bytearray, last: int) -> int:
    """Append one token as libclamav writes it; returns the class of its last character."""
    kind = token.type

    def space(current: int) -> None:
        if last in _ALNUM and current in _ALNUM:
            out.append(0x20)

    def text(data: bytes) -> None:
        if len(data) <= OUTPUT_SLICE:
            out.extend(data.translate(_OUT))
        elif isinstance(data, bytearray):
            # A string token's own buffer, written once (Script.write consumes its tokens):
            # it shrinks as the output grows, so a huge string is never held twice.
            while data:
                out.extend(data[:OUTPUT_SLICE].translate(_OUT))
                del data[:OUTPUT_SLICE]
        else:
            view = memoryview(data)
            for begin in range(0, len(data), OUTPUT_SLICE):
                out.extend(bytes(view[begin:begin + OUTPUT_SLICE]).translate(_OUT))

    if kind == T_STRING:
        out.append(0x22)
        text(token.text or b"")
        out.append(0x22)
        return 0x22
    if kind == T_INT:
        space(0x30)
        text(b"%d" % token.value)
        return 0x30
    if kind == T_FLOAT:
        space(0x30)
        text(f"{token.value:g}".encode())
        return 0x30
    if kind == T_IDENT:
        space(0x61)
        number = scope.lookup(token.text)
        text(token.text if number == -1 else b"n%03d" % number)
        return 0x61
    if kind == T_FUNCTION:
        space(0x61)
        text(b"function")
        return 0x61
    if token.text:
        space(token.text[0])
        text(token.text)
        return token.text[-1]
    return 0


def normalise_scripts(scripts: list[list[bytes]]) -> bytearray | None:
    """The "javascript" view for the script bodies of one HTML file, or None without any.

    Each item is a script's text as the HTML normaliser collected it, chunk by chunk. The
    lists are emptied as they are read and the view is returned as built, so no text is held
    twice; inside a scan, the scan's time budget is checked as they are read."""
    if not scripts:
        return None
    out = bytearray()
    fed = 0
    for n, pieces in enumerate(scripts):
        if n:
            out += b"\n"
        script = Script()
        pieces.reverse()
        while pieces:
            script.feed(pieces.pop())
            fed += 1
            if fed % PIECES_PER_TIME_CHECK == 0:
                check_running_time()
            if len(script.tokens) > MAX_SCRIPT_TOKENS:
                script.flush(out)
        script.done()
        script.write(out)
    return out


__all__ = ["Script", "append_string", "normalise_scripts", "unescape"]
