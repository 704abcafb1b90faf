#!/usr/bin/env bash
# includes.sh [NATIVE_DIR] — the include direction of the native layers:
#
#   wire  <-  tcp  <-  engine  ->  io (link contract)  ->  include (public API)
#
# wire includes only wire; tcp includes wire and tcp; io includes io and the public headers;
# engine may include every layer; the public headers (include/) include no other layer.
# Sources outside the layers (tests, fuzz, bench) may include anything.
set -euo pipefail
root=${1:-$(cd "$(dirname "$0")/.." && pwd)}
cd "$root"
allowed() {
    case $1 in
        wire) echo "wire" ;;
        tcp) echo "wire tcp" ;;
        io) echo "io include" ;;
        engine) echo "wire tcp engine io include" ;;
        include) echo "include" ;;
    esac
}
bad=0
for f in wire/*.[ch] tcp/*.[ch] engine/*.[ch] io/*.[ch] include/*.h; do
    layer=${f%%/*}
    ok=$(allowed "$layer")
    while IFS= read -r inc; do
        # resolve "x.h" as the compiler does with -Iinclude -I.: beside the file, then native/, then include/
        if [ -e "$(dirname "$f")/$inc" ]; then target=$(realpath --relative-to=. "$(dirname "$f")/$inc")
        elif [ -e "$inc" ]; then target=$(realpath --relative-to=. "$inc")
        elif [ -e "include/$inc" ]; then target="include/$inc"
        else echo "$f: cannot resolve #include \"$inc\"" >&2; bad=1; continue
        fi
        tl=${target%%/*}
        case " $ok " in
            *" $tl "*) ;;
            *) echo "$f includes $target: $layer may include only: $ok" >&2; bad=1 ;;
        esac
    done < <(sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*"\([^"]*\)".*/\1/p' "$f")
done
[ $bad = 0 ] && echo "check-includes: wire <- tcp <- engine -> io -> include holds"
exit $bad
