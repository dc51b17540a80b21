package main

import (
	"context"
	"errors"
)

// The client commands of the user's workflow; see issue "The user's client".
func runConvert(ctx context.Context, args []string) error {
	return errors.New("convert: not implemented yet; use curl as the README shows")
}

func runStatus(ctx context.Context, args []string) error {
	return errors.New("status: not implemented yet; use curl as the README shows")
}

func runDownload(ctx context.Context, args []string) error {
	return errors.New("download: not implemented yet; use curl as the README shows")
}
