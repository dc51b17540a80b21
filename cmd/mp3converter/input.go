package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/term"
)

// What the commands read from the person: flags in any order, passwords
// without echo.

// readPassword reads a hidden password from the terminal (twice when
// confirm), or one line from stdin when it is not a terminal. Never a flag:
// flags end up in shell history and process lists.
func readPassword(prompt string, confirm bool) (string, error) {
	fd := int(os.Stdin.Fd())
	if !term.IsTerminal(fd) {
		line, err := bufio.NewReader(os.Stdin).ReadString('\n')
		if err != nil && line == "" {
			return "", errors.New("no password on stdin")
		}
		return strings.TrimRight(line, "\r\n"), nil
	}
	fmt.Fprint(os.Stderr, prompt)
	first, err := term.ReadPassword(fd)
	fmt.Fprintln(os.Stderr)
	if err != nil {
		return "", err
	}
	if confirm {
		fmt.Fprint(os.Stderr, "Again: ")
		second, err := term.ReadPassword(fd)
		fmt.Fprintln(os.Stderr)
		if err != nil {
			return "", err
		}
		if string(first) != string(second) {
			return "", errors.New("the passwords differ")
		}
	}
	return string(first), nil
}

// reorder moves flags before positional arguments, so `user add EMAIL
// --admin` works as well as `user add --admin EMAIL`.
func reorder(args []string) []string {
	var flags, rest []string
	for i := 0; i < len(args); i++ {
		if strings.HasPrefix(args[i], "-") {
			flags = append(flags, args[i])
			if !strings.Contains(args[i], "=") && takesValue(args[i]) && i+1 < len(args) {
				i++
				flags = append(flags, args[i])
			}
			continue
		}
		rest = append(rest, args[i])
	}
	return append(flags, rest...)
}

// takesValue lists the flags of this CLI that are followed by a value.
func takesValue(flag string) bool {
	switch strings.TrimLeft(flag, "-") {
	case "server", "out", "o", "addr", "data-dir":
		return true
	}
	return false
}
