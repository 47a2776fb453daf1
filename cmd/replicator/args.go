package main

import (
	"slices"
	"strings"

	"github.com/urfave/cli/v2"
)

// flagsFirst moves a command's flags before its positional arguments, so
// that `replicator history user_123 --json` means what it says: urfave/cli
// stops parsing flags at the first positional argument. A "--" ends the
// flags; everything after it stays positional.
func flagsFirst(app *cli.App, args []string) []string {
	i := commandIndex(app, args)
	if i < 0 {
		return args
	}
	cmd := app.Command(args[i])
	if cmd == nil {
		return args
	}
	var flags, positional []string
	rest := args[i+1:]
	for j := 0; j < len(rest); j++ {
		a := rest[j]
		switch {
		case a == "--":
			positional = append(positional, rest[j:]...)
			j = len(rest)
		case len(a) > 1 && strings.HasPrefix(a, "-"):
			flags = append(flags, a)
			if !strings.Contains(a, "=") && takesValue(cmd.Flags, a) && j+1 < len(rest) {
				j++
				flags = append(flags, rest[j])
			}
		default:
			positional = append(positional, a)
		}
	}
	out := slices.Clone(args[:i+1])
	out = append(out, flags...)
	return append(out, positional...)
}

// commandIndex finds the command's name in args, skipping the global flags
// and their values; -1 when there is none.
func commandIndex(app *cli.App, args []string) int {
	for i := 1; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "-") {
			return i
		}
		if a == "--" {
			return -1
		}
		if !strings.Contains(a, "=") && takesValue(app.Flags, a) {
			i++
		}
	}
	return -1
}

// takesValue reports whether the flag arg (-x or --name) is one of flags
// and needs a value: every flag but a boolean one.
func takesValue(flags []cli.Flag, arg string) bool {
	name := strings.TrimLeft(arg, "-")
	for _, f := range flags {
		if !slices.Contains(f.Names(), name) {
			continue
		}
		_, isBool := f.(*cli.BoolFlag)
		return !isBool
	}
	return false
}
