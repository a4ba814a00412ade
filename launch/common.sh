# shellcheck shell=bash
# Helpers shared by the launch scripts (sourced, not run).

die() { echo "error: $*" >&2; exit 2; }

# Shell-quote for display: plain words as they are, anything else in single quotes.
quote() {
  local out=() a
  for a in "$@"; do
    if [[ "$a" =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then out+=("$a")
    else out+=("'${a//\'/\'\\\'\'}'"); fi
  done
  echo "${out[*]}"
}

# need_value FLAG VALUE...: the flag must be followed by a value that is not another flag.
need_value() { [[ $# -ge 2 && -n "$2" && "$2" != --* ]] || die "$1 needs a value"; }
