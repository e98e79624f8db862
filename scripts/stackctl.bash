# bash completion for stackctl (stackwatch).
_stackctl()
{
    local cur prev words cword
    cur=${COMP_WORDS[COMP_CWORD]}
    prev=${COMP_WORDS[COMP_CWORD-1]}
    words=("${COMP_WORDS[@]}")
    cword=$COMP_CWORD

    case $prev in
        --dir|--html|-o|--output|--agent)
            COMPREPLY=($(compgen -f -- "$cur"))
            return ;;
        --format)
            COMPREPLY=($(compgen -W "text json folded pprof" -- "$cur"))
            return ;;
        --class)
            COMPREPLY=($(compgen -W "leak growing retained cache transient" -- "$cur"))
            return ;;
        --by)
            COMPREPLY=($(compgen -W "exe" -- "$cur"))
            return ;;
        --fail-on)
            COMPREPLY=($(compgen -W "leak growing unreachable" -- "$cur"))
            return ;;
        --signal)
            COMPREPLY=($(compgen -W "USR1 USR2 HUP INT TERM TRAP" -- "$cur"))
            return ;;
        --pid)
            COMPREPLY=($(compgen -W "$(stackctl query clients 2>/dev/null |
                awk 'NR > 1 && $1 ~ /^[0-9]+$/ { print $1 }')" -- "$cur"))
            return ;;
        --top|--min-bytes|--exe|--match|--module|--stack|--frame|--min-depth|--count|--timeout|\
        --expire|--sample)
            return ;;
    esac

    # The command words so far (options and their values skipped).
    local cmd=() i w
    for ((i = 1; i < cword; i++)); do
        w=${words[i]}
        case $w in
            --dir|--pid|--top|--min-bytes|--exe|--class|--format|--by|-o|--output|--html|\
            --match|--module|--stack|--frame|--min-depth|--signal|--count|--agent|--timeout|\
            --expire|--sample|--fail-on)
                ((i++)) ;;
            --) [[ ${cmd[0]} == run ]] && { cmd+=("--"); break; } ;;
            -*) ;;
            *) cmd+=("$w") ;;
        esac
    done

    local opts=""
    case "${cmd[0]} ${cmd[1]}" in
        " ")
            COMPREPLY=($(compgen -W "run query mark snapshot diff report trigger attach detach scan --dir --version --help" -- "$cur"))
            return ;;
        "query ")
            COMPREPLY=($(compgen -W "leaks clients" -- "$cur"))
            return ;;
        "trigger ")
            COMPREPLY=($(compgen -W "add list rm" -- "$cur"))
            return ;;
        "query leaks")
            opts="--pid --exe --top --min-bytes --class --all --by --since-mark --reachability --all-frames --json --format -o" ;;
        "query clients"|"trigger list")
            opts="--json" ;;
        "trigger add")
            opts="--match --module --stack --pid --frame --min-depth --signal --count --json" ;;
        mark*)
            opts="--pid -o" ;;
        snapshot*)
            opts="--pid -o" ;;
        attach*)
            if [[ $cur != -* ]]; then
                COMPREPLY=($(compgen -W "$(ps -u "$(id -u)" -o pid= 2>/dev/null)" -- "$cur"))
                return
            fi
            opts="--agent --timeout" ;;
        detach*|scan*)
            if [[ $cur != -* ]]; then
                COMPREPLY=($(compgen -W "$(stackctl query clients 2>/dev/null |
                    awk 'NR > 1 && $1 ~ /^[0-9]+$/ && $3 == "connected" { print $1 }')" -- "$cur"))
                return
            fi
            opts="--timeout --json" ;;
        report*)
            opts="--html --pid --exe --top --all-frames" ;;
        "run --")
            COMPREPLY=($(compgen -c -- "$cur"))
            return ;;
        run*)
            opts="--expire --sample --top --json --html -o --fail-on --agent --all-frames --" ;;
        diff*)
            if [[ $cur != -* ]]; then
                COMPREPLY=($(compgen -f -- "$cur"))
                return
            fi
            opts="--top --json" ;;
    esac
    COMPREPLY=($(compgen -W "$opts" -- "$cur"))
}
complete -F _stackctl stackctl
