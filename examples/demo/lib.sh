# Sourced by the demo steps: show each command, then its output.
show() {
    printf '\n$'; printf ' %q' "$@"; printf '\n'
    "$@"
}
booted() {
    printf '\n>>> this boot: / is %s\n' "$(findmnt -no SOURCE /)"
}
