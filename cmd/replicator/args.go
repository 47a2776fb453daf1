package main

import (
	"strings"

	"github.com/urfave/cli/v2"
)

// reorderArgs lets flags follow a command's positional arguments, as people
// type them (replicator import clerk --dry-run, replicator history user_1
// --json): urfave/cli v2 stops reading flags at the first positional
// argument. It moves the command's flags, with their values, in front of its
// positional arguments, and global flags given after the command in front of
// the command. Everything after "--" stays positional, in order.
//
// It needs to know which flags take a value, so it reads the command's
// definitions; an unknown flag moves with the command's flags, so the parser
// reports it as one.
func reorderArgs(app *cli.App, args []string) []string {
	if len(args) < 2 {
		return args
	}
	globals := flagArity(app.Flags)
	// Find the command: the first word that is neither a global flag nor
	// the value of one.
	i := 1
	for i < len(args) && strings.HasPrefix(args[i], "-") && args[i] != "-" && args[i] != "--" {
		i += 1 + valueWords(globals, args[i])
	}
	if i >= len(args) {
		return args
	}
	cmd := app.Command(args[i])
	if cmd == nil || hasSubcommands(cmd) {
		return args
	}
	own := flagArity(cmd.Flags)
	head := append([]string(nil), args[:i]...) // program and global flags
	var flags, positional []string
	rest := args[i+1:]
	for j := 0; j < len(rest); j++ {
		w := rest[j]
		if w == "--" {
			positional = append(positional, rest[j:]...)
			break
		}
		name, isFlag := flagName(w)
		if !isFlag {
			positional = append(positional, w)
			continue
		}
		if name == "help" || name == "h" {
			// urfave/cli reads an argument after --help as a subcommand
			// to describe: show the command's own help.
			return append(head, args[i], w)
		}
		takesValue, isOwn := own[name]
		globalTakesValue, isGlobal := globals[name]
		words := []string{w}
		if !isOwn && isGlobal {
			takesValue = globalTakesValue
		}
		if takesValue && !strings.Contains(w, "=") && j+1 < len(rest) {
			words = append(words, rest[j+1])
			j++
		}
		if !isOwn && isGlobal {
			head = append(head, words...)
		} else {
			// The command's flag, or one nobody defines, which the parser
			// then reports as a usage error.
			flags = append(flags, words...)
		}
	}
	out := append(head, args[i])
	out = append(out, flags...)
	return append(out, positional...)
}

// hasSubcommands reports whether cmd has subcommands of its own, besides the
// "help" that urfave/cli adds once it has run a command.
func hasSubcommands(cmd *cli.Command) bool {
	for _, sub := range cmd.Subcommands {
		if sub.Name != "help" {
			return true
		}
	}
	return false
}

// flagArity maps every name and alias of flags to whether it takes a value.
func flagArity(flags []cli.Flag) map[string]bool {
	m := map[string]bool{}
	for _, f := range flags {
		takes := true
		if d, ok := f.(cli.DocGenerationFlag); ok {
			takes = d.TakesValue()
		}
		for _, n := range f.Names() {
			m[n] = takes
		}
	}
	return m
}

// flagName returns the name of a word that looks like a flag: -x, --x or
// --x=value. "-" alone is an argument (stdin, by convention).
func flagName(w string) (string, bool) {
	if len(w) < 2 || w[0] != '-' {
		return "", false
	}
	name := strings.TrimLeft(w, "-")
	if name == "" {
		return "", false
	}
	name, _, _ = strings.Cut(name, "=")
	return name, true
}

// valueWords is 1 when the flag word w is followed by its value.
func valueWords(arity map[string]bool, w string) int {
	name, ok := flagName(w)
	if ok && arity[name] && !strings.Contains(w, "=") {
		return 1
	}
	return 0
}
