#!/usr/bin/env python3
"""gen-docs.py CELL OUTDIR: man pages and shell completions made from the
help text the binary prints, so they cannot drift from it (make runs this
whenever the binary changes; scripts/install.sh installs the result).

    OUTDIR/man1/cell.1              `cell help`
    OUTDIR/man1/cell-CMD[-SUB].1    `cell help CMD [SUB]`, for each command
                                    whose help is its own (not the global one)
    OUTDIR/completion/cell.bash     bash: complete -F _cell cell
    OUTDIR/completion/_cell         zsh (#compdef cell)

gen-docs.py --markdown CELL FILE writes the command reference docs/cli.md:
a short intro (CLI_MD_INTRO below), then each help text verbatim, one
section per command, in the order `cell help` names them (FILE is left
untouched when it already says that; tests/integration/test_cli_docs.py
checks the committed one against the binary).

The help texts share one layout, which is all this reads: `usage:` lines
(and `       cell ...` continuations), paragraphs, and sections (`options:`,
`commands:`, `signals:` ...) whose items are `  TERM   description` with
the description's continuation lines indented further.  Commands and their
subcommands are found from the usage lines (`cell lane create NAME`: lane's
subcommand create); an option is a `--word` or `-x` the text names; one
whose item is `--opt VALUE` takes a value, a file name when VALUE says
FILE, DIR, PATH or SRC."""
import os
import re
import subprocess
import sys

OPT_RE = re.compile(r"(?<![\w/$-])(--[a-z][a-z0-9-]*|-[a-zA-Z])(?![\w])")
PLACEHOLDER_FILE = re.compile(r"^(\[)?(FILE|DIR|PATH|SRC|DST|F)\b")


def cell_help(cell, words, fallback=None):
    """`cell help WORDS`; when that fails, fallback (a subcommand without a
    --help of its own is documented by its command's text), else exit."""
    r = subprocess.run([cell, "help", *words], capture_output=True, text=True, timeout=30,
                       env=dict(os.environ, LC_ALL="C"))
    if r.returncode != 0:
        msg = "gen-docs: `cell help %s` exited %d: %s" % (" ".join(words), r.returncode, (r.stderr.strip().split("\n") or [""])[0])
        if fallback is None:
            sys.exit(msg)
        print(msg + " (documented by `cell help %s`)" % " ".join(words[:-1]), file=sys.stderr)
        return fallback
    return r.stdout


# ---- parsing the help text ------------------------------------------------------------------


def blocks(text):
    """Blank-line separated blocks of lines."""
    out, cur = [], []
    for line in text.rstrip("\n").split("\n"):
        if line.strip():
            cur.append(line.rstrip())
        elif cur:
            out.append(cur)
            cur = []
    if cur:
        out.append(cur)
    return out


def split_items(lines):
    """Items of a section: [(term, [description lines])].  The description
    column is the one most lines of the block use (a term may be followed by
    a single space when it fills its column); a term alone on its line takes
    the following, further indented lines as its description."""
    cols = {}
    for line in lines:
        if line.startswith("  ") and not line.startswith("   "):
            for m in re.finditer(r"\S\s{2,}(?=\S)", line):
                cols[m.end()] = cols.get(m.end(), 0) + 1
    col = max(cols, key=lambda c: (cols[c], -c)) if cols else None
    items = []
    for line in lines:
        indent = len(line) - len(line.lstrip())
        if indent == 2:
            body = line[2:]
            if col and len(line) > col and line[col - 1] == " " and line[col] != " " and line[:col].strip():
                term, desc = line[:col].strip(), line[col:].strip()
            else:
                m = re.match(r"(\S.*?)\s{2,}(\S.*)$", body)
                term, desc = (m.group(1), m.group(2)) if m else (body.strip(), "")
            items.append((term, [desc] if desc else []))
        elif items:
            items[-1][1].append(line.strip())
        else:
            items.append(("", [line.strip()]))
    return items


def parse(text):
    """{'usage': [lines], 'sections': [(title or None, kind, payload)]}:
    kind 'items' (payload [(term, desc lines)]) or 'para' (payload lines)."""
    bl = blocks(text)
    usage = []
    if bl and bl[0][0].startswith("usage: "):
        for line in bl.pop(0):
            usage.append(line[len("usage: "):] if line.startswith("usage: ") else line.strip())
    sections = []
    for b in bl:
        head = b[0]
        if re.match(r"^[a-z][^:]*:$", head) and len(b) > 1:
            sections.append((head[:-1], "items", split_items(b[1:])))
        elif re.match(r"^(exit codes|signals|environment|files|examples):\s", head):
            # "exit codes: 0 done; ..." : a titled paragraph
            title, first = head.split(":", 1)
            sections.append((title, "para", [first.strip()] + b[1:]))
        else:
            sections.append((None, "para", b))
    return {"usage": usage, "sections": sections}


def usage_commands(usage, words):
    """The subcommands the usage lines name after `cell WORDS`."""
    subs = []
    for line in usage:
        toks = line.split()
        if toks[:1] != ["cell"]:
            continue
        toks = toks[1:]
        if toks[:len(words)] != list(words) or len(toks) <= len(words):
            continue
        # "runs [ls] ..." : an optional subcommand is one too
        sub = toks[len(words)].strip("[]")
        if re.match(r"^[a-z][a-z0-9-]*$", sub) and sub not in subs:
            subs.append(sub)
    return subs


def item_commands(term):
    """`start ID | stop ID | rm ID`, `token create|ls|revoke`: the command
    words an item of a commands section names ([] for a global option)."""
    if term.startswith("-"):
        return []
    out = []
    for alt in term.split(" | "):
        words = alt.split()
        if words and re.match(r"^[a-z][a-z0-9-]*$", words[0]):
            out.append(words)
    return out


def is_placeholder(tok):
    """NAME, FILE, SECRET[,base=URL], nothing|lane|cell, stdout|stderr..."""
    return bool(re.match(r"^[A-Z]", tok)) or "|" in tok


def option_args(terms):
    """({option: placeholder} for options that take a value, [options]) of
    item terms and usage lines: `--image NAME`, `[--stream stdout|stderr]`,
    `-t, --tty`, `--allow PATTERN, --deny PATTERN`."""
    args, opts = {}, []
    for term in terms:
        toks = [t.strip("[],") for t in term.split()]
        for i, tok in enumerate(toks):
            name = tok.split("=", 1)[0]
            if not OPT_RE.fullmatch(name):
                continue
            if name not in opts:
                opts.append(name)
            if "=" in tok:
                args.setdefault(name, tok.split("=", 1)[1])
            elif i + 1 < len(toks) and is_placeholder(toks[i + 1]):
                args.setdefault(name, toks[i + 1])
    return args, opts


def item_terms(parsed):
    return [t for _, kind, items in parsed["sections"] if kind == "items" for t, _ in items]


# ---- roff ---------------------------------------------------------------------------------


def roff_text(s):
    s = s.replace("\\", "\\e")
    s = s.replace("-", "\\-")
    s = s.replace("'", "\\(aq").replace("`", "\\(ga")
    if s.startswith("."):
        s = "\\&" + s
    return s


def man_page(name, section_title, desc, parsed, see_also, version):
    out = ['.\\" Generated by scripts/gen-docs.py from `%s`; do not edit.' % section_title,
           '.TH "%s" "1" "" "cell %s" "cell manual"' % (name.upper(), version),
           ".nh", ".ad l",
           ".SH NAME", "%s \\- %s" % (roff_text(name), roff_text(desc)),
           ".SH SYNOPSIS", ".nf"]
    out += [roff_text(u) for u in parsed["usage"]]
    out += [".fi"]
    current = "DESCRIPTION"
    out.append(".SH DESCRIPTION")
    for title, kind, payload in parsed["sections"]:
        if title is None and current != "DESCRIPTION" and kind == "para":
            title = "notes"             # the text after a section is not part of it
        if title is not None:
            heading = title.upper()
            if heading == "EXIT CODES":
                heading = "EXIT STATUS"
            if heading != current:
                out.append('.SH "%s"' % roff_text(heading))
                current = heading
        if kind == "items":
            for term, desc_lines in payload:
                if term:
                    out += [".TP", "\\fB%s\\fR" % roff_text(term)]
                else:
                    out.append(".PP")
                out += [roff_text(d) for d in desc_lines]
        else:
            out.append(".PP")
            for line in payload:
                if line.startswith("  "):
                    out += [".nf", roff_text(line.strip()), ".fi"]
                else:
                    out.append(roff_text(line))
    if see_also:
        out += [".SH \"SEE ALSO\"", ",\n".join("\\fB%s\\fR(1)" % roff_text(p) for p in see_also)]
    return "\n".join(out) + "\n"


def first_sentence(parsed, fallback):
    for title, kind, payload in parsed["sections"]:
        if title is None and kind == "para":
            text = " ".join(payload)
            m = re.match(r"(.+?[.:;])(\s|$)", text)
            s = (m.group(1) if m else text).rstrip(".:;")
            return s[0].lower() + s[1:] if s[:1].isupper() and not s[:2].isupper() else s
    return fallback


# ---- the command tree ---------------------------------------------------------------------


class Node:
    def __init__(self, words, text=None, parsed=None):
        self.words = tuple(words)
        self.text = text            # its own help, or None
        self.parsed = parsed
        self.subs = []              # subcommand words
        self.opts = []              # options
        self.args = {}              # option -> placeholder


def add_options(node, terms):
    args, opts = option_args(terms)
    node.opts += [o for o in opts if o not in node.opts]
    for o, p in args.items():
        node.args.setdefault(o, p)


def explore(cell, words, parent_text, tree):
    text = cell_help(cell, words, parent_text if len(words) > 1 else None)
    node = tree.setdefault(tuple(words), Node(words))
    if text == parent_text:
        return node
    node.text, node.parsed = text, parse(text)
    usage = node.parsed["usage"]
    node.subs = usage_commands(usage, words)
    # A usage line naming a subcommand gives that subcommand its options.
    by_sub = {sub: [u for u in usage if usage_commands([u], words) == [sub]] for sub in node.subs}
    add_options(node, item_terms(node.parsed) + [u for u in usage if not usage_commands([u], words)])
    for sub in node.subs:
        # `cell help` takes COMMAND [SUBCOMMAND]: deeper words (agent runs
        # ls) are documented by their parent's text.
        if len(words) >= 2:
            child = tree.setdefault(tuple(words) + (sub,), Node(list(words) + [sub]))
        else:
            child = explore(cell, list(words) + [sub], text, tree)
        if child.text is None:
            add_options(child, by_sub[sub])
    return node


def build_tree(cell):
    top_text = cell_help(cell, [])
    top = parse(top_text)
    tree = {(): Node([], top_text, top)}
    root = tree[()]
    root.opts = []
    for title, kind, payload in top["sections"]:
        if kind != "items":
            continue
        if "option" in title:
            args, opts = option_args([t for t, _ in payload])
            root.args.update(args)
            root.opts += [o for o in opts if o not in root.opts]
            continue
        for term, desc in payload:
            for alt in item_commands(term):
                cmd = alt[0]
                if cmd not in root.subs:
                    root.subs.append(cmd)
                node = tree.get((cmd,)) or explore(cell, [cmd], top_text, tree)
                if node.text is None:
                    # No help of its own: the global usage's lines are its
                    # documentation (`lane create NAME [--image IMAGE]`).
                    if len(alt) > 1 and re.match(r"^[a-z][a-z0-9-]*$", alt[1]) and alt[1] not in node.subs:
                        node.subs.append(alt[1])
                        sub = tree.setdefault((cmd, alt[1]), Node([cmd, alt[1]]))
                        args, opts = option_args([" ".join(alt[2:])])
                        sub.opts += [o for o in opts if o not in sub.opts]
                        sub.args.update(args)
                    elif len(alt) > 1:
                        args, opts = option_args([" ".join(alt[1:])])
                        node.opts += [o for o in opts if o not in node.opts]
                        node.args.update(args)
    for node in tree.values():
        node.opts += [o for o in ("-h", "--help") if o not in node.opts and node.words != ("help",)]
    # `cell help COMMAND`
    tree[("help",)].subs = [c for c in root.subs if c != "help"]
    return tree


# ---- completion scripts ---------------------------------------------------------------------


def case_table(fn, tree, pick):
    lines = ["%s() {" % fn, '    case "$1" in']
    for words, node in sorted(tree.items()):
        vals = pick(node)
        if vals:
            lines.append('    "%s") echo "%s" ;;' % (" ".join(words), " ".join(vals)))
    lines += ["    esac", "}"]
    return "\n".join(lines)


def file_arg(placeholder):
    return bool(PLACEHOLDER_FILE.match(placeholder)) or "FILE" in placeholder.split("|")


def completion_tables(tree, prefix):
    return "\n\n".join([
        case_table(prefix + "_subs", tree, lambda n: n.subs),
        case_table(prefix + "_opts", tree, lambda n: n.opts),
        case_table(prefix + "_argopts", tree, lambda n: sorted(n.args)),
        case_table(prefix + "_fileopts", tree, lambda n: sorted(o for o, p in n.args.items() if file_arg(p))),
    ])


# The walk is the same in both shells: the words before the cursor select
# the command path (global options and their values skipped, a first
# positional word ends the path); then the cursor word completes to an
# option, an option's value, a subcommand, or a file.
BASH_DRIVER = r'''
_cell_has() {
    local w
    for w in $1; do [ "$w" = "$2" ] && return 0; done
    return 1
}

_cell() {
    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}
    local cmdpath="" w i positional=0
    # --opt=VALUE: bash splits it into --opt, = and VALUE (COMP_WORDBREAKS).
    if [ "$prev" = "=" ] && [ "$COMP_CWORD" -gt 2 ]; then
        prev=${COMP_WORDS[COMP_CWORD-2]}
    elif [ "$cur" = "=" ]; then
        prev=${COMP_WORDS[COMP_CWORD-1]} cur=""
    fi
    for ((i = 1; i < COMP_CWORD; i++)); do
        w=${COMP_WORDS[i]}
        if [[ $w == -* ]]; then
            if [[ $w != *=* ]] && _cell_has "$(_cell_argopts "$cmdpath")" "$w"; then
                ((i++))
                [ "${COMP_WORDS[i]}" = "=" ] && ((i++))
            fi
        elif [ "$positional" = 0 ] && _cell_has "$(_cell_subs "$cmdpath")" "$w"; then
            cmdpath=${cmdpath:+$cmdpath }$w
        else
            positional=1
        fi
    done
    COMPREPLY=()
    if [ "$COMP_CWORD" -gt 1 ] && [[ $prev == -* ]] && _cell_has "$(_cell_argopts "$cmdpath")" "$prev"; then
        if _cell_has "$(_cell_fileopts "$cmdpath")" "$prev"; then
            COMPREPLY=($(compgen -f -- "$cur"))
        fi
        return 0
    fi
    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "$(_cell_opts "$cmdpath")" -- "$cur"))
    elif [ "$positional" = 0 ] && [ -n "$(_cell_subs "$cmdpath")" ]; then
        COMPREPLY=($(compgen -W "$(_cell_subs "$cmdpath")" -- "$cur"))
    else
        COMPREPLY=($(compgen -f -- "$cur"))
    fi
    return 0
}

complete -F _cell cell
'''

ZSH_DRIVER = r'''
_cell_has() {
    local w
    for w in ${=1}; do [[ $w == "$2" ]] && return 0; done
    return 1
}

_cell() {
    local cur=${words[CURRENT]} prev=${words[CURRENT-1]}
    local cmdpath="" w i positional=0
    for ((i = 2; i < CURRENT; i++)); do
        w=${words[i]}
        if [[ $w == -* ]]; then
            if [[ $w != *=* ]] && _cell_has "$(_cell_argopts "$cmdpath")" "$w"; then
                ((i++))
            fi
        elif [[ $positional == 0 ]] && _cell_has "$(_cell_subs "$cmdpath")" "$w"; then
            cmdpath=${cmdpath:+$cmdpath }$w
        else
            positional=1
        fi
    done
    if (( CURRENT > 2 )) && [[ $prev == -* ]] && _cell_has "$(_cell_argopts "$cmdpath")" "$prev"; then
        _cell_has "$(_cell_fileopts "$cmdpath")" "$prev" && _files
        return 0
    fi
    if [[ $cur == -* ]]; then
        compadd -- ${=$(_cell_opts "$cmdpath")}
    elif [[ $positional == 0 && -n $(_cell_subs "$cmdpath") ]]; then
        compadd -- ${=$(_cell_subs "$cmdpath")}
    else
        _files
    fi
}

_cell "$@"
'''


def bash_script(tree):
    return ("# bash completion for cell: generated by scripts/gen-docs.py from `cell help`; do not edit.\n\n"
            + completion_tables(tree, "_cell") + "\n" + BASH_DRIVER)


def zsh_script(tree):
    return ("#compdef cell\n# zsh completion for cell: generated by scripts/gen-docs.py from `cell help`; "
            "do not edit.\n\n" + completion_tables(tree, "_cell") + "\n" + ZSH_DRIVER)


# ---- main ---------------------------------------------------------------------------------


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


# ---- docs/cli.md ----------------------------------------------------------------------------

CLI_MD_INTRO = """\
The `cell` command runs one-shot cells itself (`cell run`), manages what is
stored in the state directory (`cell lane`, `cell image`), starts the daemon
(`cell serve`) and talks to a running daemon (`cell create`, `exec`, `cp`,
`agent run`...). Each section below is the command's own help, exactly as
`cell help COMMAND` (the same as `cell COMMAND --help`) prints it; `cell serve
--help` is also what `cell-daemon --help` prints, and docs/config.md describes
its config file. The man pages (`man cell`, `man cell-run`...) and the bash
and zsh completions are made from the same text (`make docs`), and
tests/integration/test_cli_docs.py fails when this file no longer matches the
binary: run `make docs` and commit the result.
"""


def markdown(tree):
    """docs/cli.md: the intro, then one section per help text (commands that
    share one, like start, stop and rm, share its section)."""
    titles = {}     # help text -> command lines naming it, in the help's order
    for words, node in tree.items():
        if node.text is not None:
            titles.setdefault(node.text, []).append(" ".join(("cell",) + words))
    out = ["# The cell command", "",
           "<!-- Generated by scripts/gen-docs.py from `cell help` and `cell help COMMAND`;",
           "     do not edit: change the help text in src/cli and run `make docs`. -->", "",
           CLI_MD_INTRO.rstrip("\n"), ""]
    out += ["Commands: " + ", ".join("[`%s`](#%s)" % (t[0], anchor(", ".join(t))) for t in list(titles.values())[1:]), ""]
    for text, names in titles.items():
        out += ["## " + ", ".join("`%s`" % n for n in names), "", "```text", text.rstrip("\n"), "```", ""]
    return "\n".join(out)


def anchor(title):
    """GitHub's anchor of a heading `cell agent run` (backticks dropped)."""
    return re.sub(r"[^a-z0-9 -]", "", title.lower()).replace(" ", "-")


def write_markdown(cell, path):
    text = markdown(build_tree(cell))
    try:
        with open(path) as f:
            if f.read() == text:
                return
    except FileNotFoundError:
        pass
    write(path, text)


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "--markdown":
        write_markdown(sys.argv[2], sys.argv[3])
        return
    if len(sys.argv) != 3:
        sys.exit("usage: gen-docs.py CELL OUTDIR | gen-docs.py --markdown CELL FILE")
    cell, outdir = sys.argv[1], sys.argv[2]
    version = subprocess.run([cell, "--version"], capture_output=True, text=True, check=True).stdout.split()[-1]
    tree = build_tree(cell)
    pages = [(w, n) for w, n in tree.items() if n.text is not None and w]    # in the help's order
    names = ["cell-" + "-".join(w) for w, _ in pages]
    root = tree[()]
    # One page per text: `cell help stop` is start's, so cell-stop.1 points there.
    first = {}
    for (_, node), name in zip(pages, names):
        first.setdefault(node.text, name)
    write(os.path.join(outdir, "man1", "cell.1"),
          man_page("cell", "cell help", first_sentence(root.parsed, "isolated Linux cells"), root.parsed,
                   sorted(set(first.values())), version))
    for (words, node), name in zip(pages, names):
        path = os.path.join(outdir, "man1", name + ".1")
        if first[node.text] != name:
            write(path, ".so man1/%s.1\n" % first[node.text])
            continue
        see = ["cell"] + [n for n in names if n != name and n.startswith(name + "-")]
        write(path, man_page(name, "cell help " + " ".join(words), first_sentence(node.parsed, " ".join(words)),
                             node.parsed, see, version))
    write(os.path.join(outdir, "completion", "cell.bash"), bash_script(tree))
    write(os.path.join(outdir, "completion", "_cell"), zsh_script(tree))


if __name__ == "__main__":
    main()
