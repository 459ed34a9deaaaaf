#!/bin/sh
# check_tutorial.sh — checks that the output quoted in a tutorial is the
# output its programs print today.
#
#   check_tutorial.sh README.md program...
#
# In the text, the block quoting a program's output is the first fenced
# block after a marker line naming the program:
#
#   <!-- output of chain_rule -->
#   ```text
#   ...what build/examples/tutorial/chain_rule prints...
#   ```
#
# Each program is run (with no arguments) and its standard output compared
# with its block, which must match exactly; the differences are printed.
# A program without a block, a marker naming no program given here, or a
# program that exits with an error fails the check. Only sh, awk and diff.
set -u
if [ $# -lt 2 ]; then
    echo "usage: $0 README.md program..." >&2
    exit 2
fi
text=$1
shift
[ -r "$text" ] || { echo "check_tutorial: cannot read $text" >&2; exit 1; }
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT INT TERM
status=0

# Every marker in the text must name one of the programs given.
for name in $(awk '/^<!-- output of [A-Za-z0-9_]+ -->$/ { print $4 }' "$text"); do
    found=0
    for prog in "$@"; do
        [ "$(basename "$prog")" = "$name" ] && found=1
    done
    if [ $found = 0 ]; then
        echo "check_tutorial: $text quotes the output of $name, which is not a tutorial program"
        status=1
    fi
done

for prog in "$@"; do
    name=$(basename "$prog")
    # The lines between the opening and closing fence of the first block
    # after the marker; "missing" when there is no marker or no block.
    awk -v name="$name" '
        $0 == "<!-- output of " name " -->" { marker++; next }
        marker == 1 && state == 0 && /^```/ { state = 1; next }
        state == 1 && /^```/ { state = 2; next }
        state == 1 { print }
        END { if (state != 2 || marker != 1) exit 1 }
    ' "$text" > "$tmp/expected"
    if [ $? -ne 0 ]; then
        echo "check_tutorial: $text has no block, or more than one marker, for $name"
        status=1
        continue
    fi
    if ! "$prog" > "$tmp/actual"; then
        echo "check_tutorial: $name exited with an error"
        status=1
        continue
    fi
    if diff -u "$tmp/expected" "$tmp/actual" > "$tmp/diff"; then
        echo "ok: $name"
    else
        echo "check_tutorial: the output of $name differs from $text (- text, + program):"
        cat "$tmp/diff"
        status=1
    fi
done
exit $status
