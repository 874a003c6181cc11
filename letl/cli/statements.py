"""Where a statement typed into `letl sql` ends, as DuckDB's parser reads the text."""

import re

# What DuckDB's parser reads as one token: strings ('' inside), E'' strings (backslash escapes),
# quoted names, line and (nested) block comments, and dollar quotes, tagged or not ($1 is a parameter).
_OPENER = re.compile(r"""(?<![\w$])[Ee]'|'|"|--|/\*|\$(?:[A-Za-z_][A-Za-z0-9_]*)?\$""")


def _token_end(sql: str, i: int, opener: str) -> int:
    """The index just past the token ``opener`` starts at ``i``, or -1 when the text ends inside it."""
    j = i + len(opener)
    if opener == "--":  # to the end of the line, or of the text
        close = sql.find("\n", j)
        return len(sql) if close < 0 else close + 1
    if opener in ("'", '"'):
        close = sql.find(opener, j)
        return -1 if close < 0 else close + 1
    if opener[0] == "$":
        close = sql.find(opener, j)
        return -1 if close < 0 else close + len(opener)
    depth = 1
    while j < len(sql):
        if opener != "/*" and sql[j] == "\\":  # E'': the escaped character is part of the string
            j += 2
        elif opener != "/*" and sql[j] == "'":
            return j + 1
        elif opener == "/*" and sql.startswith(("/*", "*/"), j):
            depth += 1 if sql[j] == "/" else -1
            j += 2
            if depth == 0:
                return j
        else:
            j += 1
    return -1


def statement_end(sql: str) -> tuple[bool, bool]:
    """(whether the text ends with a ';' that is outside strings, quoted names and comments, as DuckDB
    reads it; whether it holds nothing but such ';' and comments). A ';' ending a line inside a string
    ('a;' then a new line) or a comment (-- note;) does not end the statement."""
    ended, empty, i = False, True, 0
    while i < len(sql):
        token = _OPENER.match(sql, i)
        if token is None:
            if not sql[i].isspace():
                ended, empty = sql[i] == ";", empty and sql[i] == ";"
            i += 1
            continue
        # A doubled quote inside a string or a quoted name is the quote itself: the scan goes on past it.
        opener, end = token.group(), _token_end(sql, i, token.group())
        if end < 0:
            return False, False
        if opener not in ("--", "/*"):
            ended, empty = False, False
        i = end
    return ended, empty
