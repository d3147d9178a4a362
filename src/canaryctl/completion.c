/*
 * completion.c - `canaryctl completion bash|zsh`: prints a shell completion
 * script.  It completes verbs, their sub-commands and options, and the
 * names of rollouts and flags by asking the server (`canaryctl rollout
 * list` / `flags list`, first column) with the --server and --token already
 * typed on the line.  The word lists are here, next to the verb table in
 * main.c; tests/e2e/test_cli_habits.py checks every verb of `--help` is in
 * them.  Needs no server.
 */
#include <stdio.h>
#include <string.h>

#include "canaryctl/ctl.h"

#define VERBS                                                                             \
	"status check-config rollout rollback watch evidence flags events shadow faults " \
	"fleet export completion"

/* verb -> its sub-commands or options, as shell words */
static const char *const subs[][2] = {
    {"rollout", "list get start promote pause resume abort retry approve"},
    {"flags", "list get set exclude kill history"},
    {"faults", "set clear"},
    {"export", "prometheus-rules grafana-dashboard"},
    {"completion", "bash zsh"},
    {"rollback", "--all"},
    {"events", "--follow --subject --kind --since --interval-ms"},
    {"watch", "--interval-ms"},
    {"evidence", "--out"},
};

static void print_subs_case(int zsh_syntax)
{
	for (size_t i = 0; i < sizeof(subs) / sizeof(subs[0]); i++) {
		if (zsh_syntax)
			printf("    %s) compadd -- %s -o --help;;\n", subs[i][0], subs[i][1]);
		else
			printf("    %s) COMPREPLY=($(compgen -W '%s -o --help' -- \"$cur\"));;\n",
			       subs[i][0], subs[i][1]);
	}
}

static void bash(void)
{
	fputs("# canaryctl bash completion: source <(canaryctl completion bash)\n"
	      "_canaryctl_names() {\n"
	      "  local conn=() i\n"
	      "  for ((i = 1; i < COMP_CWORD; i++)); do\n"
	      "    case ${COMP_WORDS[i]} in\n"
	      "      --server|--token|--cacert) conn+=(\"${COMP_WORDS[i]}\" "
	      "\"${COMP_WORDS[i+1]}\");;\n"
	      "    esac\n"
	      "  done\n"
	      "  canaryctl \"${conn[@]}\" \"$1\" list 2>/dev/null | awk 'NR > 1 {print $1}'\n"
	      "}\n"
	      "_canaryctl() {\n"
	      "  local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}\n"
	      "  local verb='' sub='' i n=0\n"
	      "  for ((i = 1; i < COMP_CWORD; i++)); do\n"
	      "    case ${COMP_WORDS[i]} in\n"
	      "      --server|--token|--cacert|-o|--output) ((i++));;\n"
	      "      -*) ;;\n"
	      "      *) if [[ -z $verb ]]; then verb=${COMP_WORDS[i]};\n"
	      "         elif [[ -z $sub ]]; then sub=${COMP_WORDS[i]}; fi; ((n++));;\n"
	      "    esac\n"
	      "  done\n"
	      "  case $prev in\n"
	      "    -o|--output) COMPREPLY=($(compgen -W 'table json yaml' -- \"$cur\")); return;;\n"
	      "    --server|--token|--cacert|--out|--since|--interval-ms|--percentage|--nodes) "
	      "return;;\n"
	      "  esac\n"
	      "  if [[ -z $verb ]]; then\n"
	      "    COMPREPLY=($(compgen -W '" VERBS
	      " --server --token --cacert -o --help --version' -- \"$cur\"))\n"
	      "    return\n"
	      "  fi\n"
	      "  if [[ $n -ge 2 && ( $verb == rollout || $verb == flags ) ]]; then\n"
	      "    [[ $verb == flags && $sub == set ]] && [[ $cur == -* ]] &&\n"
	      "      { COMPREPLY=($(compgen -W '--percentage --enabled --create -o' -- \"$cur\"));"
	      " return; }\n"
	      "    [[ $verb == rollout && $sub == promote && $cur == -* ]] &&\n"
	      "      { COMPREPLY=($(compgen -W '--full' -- \"$cur\")); return; }\n"
	      "    COMPREPLY=($(compgen -W \"$(_canaryctl_names $verb)\" -- \"$cur\"))\n"
	      "    return\n"
	      "  fi\n"
	      "  if [[ $verb == watch || $verb == evidence ]] && [[ $cur != -* ]]; then\n"
	      "    COMPREPLY=($(compgen -W \"$(_canaryctl_names rollout)\" -- \"$cur\"))\n"
	      "    return\n"
	      "  fi\n"
	      "  [[ $n -ge 2 ]] && [[ $cur != -* ]] && return\n"
	      "  case $verb in\n",
	      stdout);
	print_subs_case(0);
	fputs("    *) COMPREPLY=($(compgen -W '-o --help' -- \"$cur\"));;\n"
	      "  esac\n"
	      "}\n"
	      "complete -F _canaryctl canaryctl\n",
	      stdout);
}

static void zsh(void)
{
	fputs("#compdef canaryctl\n"
	      "# canaryctl zsh completion: source <(canaryctl completion zsh), or save as\n"
	      "# _canaryctl in a directory of $fpath\n"
	      "_canaryctl() {\n"
	      "  local -a words2 conn\n"
	      "  local i verb sub\n"
	      "  for ((i = 2; i < CURRENT; i++)); do\n"
	      "    case ${words[i]} in\n"
	      "      --server|--token|--cacert) conn+=(${words[i]} ${words[i+1]}); ((i++));;\n"
	      "      -o|--output) ((i++));;\n"
	      "      -*) ;;\n"
	      "      *) words2+=(${words[i]});;\n"
	      "    esac\n"
	      "  done\n"
	      "  verb=${words2[1]} sub=${words2[2]}\n"
	      "  case ${words[CURRENT-1]} in\n"
	      "    -o|--output) compadd table json yaml; return;;\n"
	      "    --server|--token|--cacert|--out|--since|--interval-ms|--percentage|--nodes) "
	      "return;;\n"
	      "  esac\n"
	      "  if [[ -z $verb ]]; then\n"
	      "    compadd -- " VERBS " --server --token --cacert -o --help --version\n"
	      "    return\n"
	      "  fi\n"
	      "  if (( ${#words2} >= 2 )) && [[ $verb == rollout || $verb == flags ]]; then\n"
	      "    [[ $verb == flags && $sub == set && ${words[CURRENT]} == -* ]] &&\n"
	      "      { compadd -- --percentage --enabled --create -o; return; }\n"
	      "    compadd -- ${(f)\"$(canaryctl $conn $verb list 2>/dev/null |"
	      " awk 'NR > 1 {print $1}')\"}\n"
	      "    return\n"
	      "  fi\n"
	      "  if [[ $verb == watch || $verb == evidence ]] && [[ ${words[CURRENT]} != -* ]];"
	      " then\n"
	      "    compadd -- ${(f)\"$(canaryctl $conn rollout list 2>/dev/null |"
	      " awk 'NR > 1 {print $1}')\"}\n"
	      "    return\n"
	      "  fi\n"
	      "  (( ${#words2} >= 2 )) && [[ ${words[CURRENT]} != -* ]] && return\n"
	      "  case $verb in\n",
	      stdout);
	print_subs_case(1);
	fputs("    *) compadd -- -o --help;;\n"
	      "  esac\n"
	      "}\n"
	      "if [[ $zsh_eval_context[-1] == loadautoload ]]; then _canaryctl \"$@\";"
	      " else compdef _canaryctl canaryctl; fi\n",
	      stdout);
}

int ctl_completion(const struct ctl *ctl, int argc, char **argv)
{
	(void)ctl;
	if (argc != 2)
		return ctl_usage_arg("completion bash|zsh", "completion takes one shell", NULL);
	if (strcmp(argv[1], "bash") == 0)
		bash();
	else if (strcmp(argv[1], "zsh") == 0)
		zsh();
	else
		return ctl_usage_arg("completion bash|zsh", "no completion for shell", argv[1]);
	return CTL_OK;
}
