#!/usr/bin/env bash
# symbols.sh OBJDIR — every global symbol a native object defines starts with its layer's prefix
# (the extension links all layers into one shared object, so an unprefixed name could clash):
#   wire/ wire_    tcp/ tcp_ (tcpi_ for tcp_int.h)    engine/ eng_ or mtcp_ (public API)    io/ link_ or mtcp_
# OBJDIR holds one object per source, as OBJDIR/<layer>/<file>.o (make -C native check-symbols).
set -euo pipefail
objdir=${1:?usage: symbols.sh OBJDIR}
bad=0
for o in "$objdir"/*/*.o; do
    layer=$(basename "$(dirname "$o")")
    case $layer in
        wire) re='^wire_' ;;
        tcp) re='^tcpi?_' ;;
        engine) re='^(eng_|mtcp_)' ;;
        io) re='^(link_|mtcp_)' ;;
        *) echo "symbols.sh: unknown layer $layer ($o)" >&2; exit 2 ;;
    esac
    while read -r sym; do
        if ! [[ $sym =~ $re ]]; then
            echo "unprefixed global symbol: $sym in $layer/$(basename "$o" .o).c" >&2
            bad=1
        fi
    done < <(nm -g --defined-only "$o" | awk 'NF == 3 { print $3 }')
done
[ $bad = 0 ] && echo "check-symbols: every global symbol carries its layer prefix"
exit $bad
