package main

import (
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"strings"
	"text/tabwriter"

	login "mp3converter/functions/login"
	"mp3converter/internal/client"
)

// runUser manages users: straight against MySQL when MYSQL_DSN is set (how
// the first admin of a cluster is made), otherwise through the server's
// admin API with the caller's token.
func runUser(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return errors.New("usage: mp3converter user add|list|delete|passwd ...")
	}
	fs := flag.NewFlagSet("user "+args[0], flag.ContinueOnError)
	server := serverFlag(fs)
	admin := fs.Bool("admin", false, "with add: the user is an admin")
	if err := fs.Parse(reorder(args[1:])); err != nil {
		return err
	}
	users, err := userStore(ctx, *server)
	if err != nil {
		return err
	}
	defer users.close()

	email := fs.Arg(0)
	needEmail := func() error {
		if fs.NArg() != 1 {
			return fmt.Errorf("usage: mp3converter user %s EMAIL", args[0])
		}
		return nil
	}
	switch args[0] {
	case "add":
		if err := needEmail(); err != nil {
			return err
		}
		password, err := readPassword("Password for "+email+": ", true)
		if err != nil {
			return err
		}
		if err := users.add(ctx, email, password, *admin); err != nil {
			return err
		}
		fmt.Printf("added %s%s\n", email, map[bool]string{true: " (admin)"}[*admin])
	case "list":
		list, err := users.list(ctx)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tEMAIL\tADMIN\tCREATED")
		for _, u := range list {
			fmt.Fprintf(tw, "%d\t%s\t%v\t%s\n", u.ID, u.Email, u.Admin, u.CreatedAt.Format("2006-01-02 15:04"))
		}
		return tw.Flush()
	case "delete":
		if err := needEmail(); err != nil {
			return err
		}
		if err := users.delete(ctx, email); err != nil {
			return err
		}
		fmt.Printf("deleted %s\n", email)
		if os.Getenv("MYSQL_DSN") != "" {
			// Straight in MySQL there is no Broker to tell: the sweep never hears of it.
			fmt.Fprintf(os.Stderr, "note: deleted in MySQL directly, so no user.deleted event was published: %s's files and jobs stay (unreachable to anyone but admins). Delete users through the server (without MYSQL_DSN) to remove their data too.\n", email)
		}
	case "passwd":
		if err := needEmail(); err != nil {
			return err
		}
		password, err := readPassword("New password for "+email+": ", true)
		if err != nil {
			return err
		}
		if err := users.passwd(ctx, email, password); err != nil {
			return err
		}
		fmt.Printf("password of %s changed\n", email)
	default:
		return fmt.Errorf("unknown user command %q: add, list, delete or passwd", args[0])
	}
	return nil
}

// userOps is the four operations, bound to MySQL or to the server.
type userOps struct {
	add    func(ctx context.Context, email, password string, admin bool) error
	list   func(ctx context.Context) ([]client.User, error)
	delete func(ctx context.Context, email string) error
	passwd func(ctx context.Context, email, password string) error
	close  func()
}

func userStore(ctx context.Context, server string) (userOps, error) {
	if dsn := os.Getenv("MYSQL_DSN"); dsn != "" {
		return mysqlUsers(ctx, dsn)
	}
	c, err := authedClient(server)
	if err != nil {
		return userOps{}, err
	}
	return userOps{
		add: func(ctx context.Context, email, password string, admin bool) error {
			_, err := c.AddUser(ctx, email, password, admin)
			return explain(err)
		},
		list:   func(ctx context.Context) ([]client.User, error) { u, err := c.Users(ctx); return u, explain(err) },
		delete: func(ctx context.Context, email string) error { return explain(c.DeleteUser(ctx, email)) },
		passwd: func(ctx context.Context, email, password string) error {
			err := c.SetPassword(ctx, email, password, "")
			var apiErr *client.APIError
			if errors.As(err, &apiErr) && apiErr.Status == http.StatusForbidden && strings.Contains(apiErr.Message, "current_password") {
				// Your own password: the server wants the current one too.
				current, rerr := readPassword("Current password for "+email+": ", false)
				if rerr != nil {
					return rerr
				}
				err = c.SetPassword(ctx, email, password, current)
			}
			return explain(err)
		},
		close: func() {},
	}, nil
}

func mysqlUsers(ctx context.Context, dsn string) (userOps, error) {
	if err := login.MigrateDSN(ctx, dsn); err != nil {
		return userOps{}, fmt.Errorf("MySQL at MYSQL_DSN is unreachable or refused: %w", err)
	}
	db, err := login.OpenDB(dsn)
	if err != nil {
		return userOps{}, err
	}
	return userOps{
		add: func(ctx context.Context, email, password string, admin bool) error {
			_, err := login.AddUser(ctx, db, email, password, admin, 0)
			return explainStore(err, email)
		},
		list: func(ctx context.Context) ([]client.User, error) {
			list, err := login.ListUsers(ctx, db)
			out := make([]client.User, len(list))
			for i, u := range list {
				out[i] = client.User{ID: u.ID, Email: u.Email, Admin: u.Admin, CreatedAt: u.CreatedAt}
			}
			return out, err
		},
		delete: func(ctx context.Context, email string) error {
			return explainStore(login.DeleteUser(ctx, db, email), email)
		},
		passwd: func(ctx context.Context, email, password string) error {
			return explainStore(login.SetPassword(ctx, db, email, password, 0), email)
		},
		close: func() { db.Close() },
	}, nil
}

func explainStore(err error, email string) error {
	switch {
	case errors.Is(err, login.ErrDuplicateUser):
		return fmt.Errorf("%s already exists", email)
	case errors.Is(err, login.ErrUnknownUser):
		return fmt.Errorf("no user %s", email)
	case errors.Is(err, sql.ErrConnDone), err != nil && strings.Contains(err.Error(), "connect"):
		return fmt.Errorf("MySQL at MYSQL_DSN is unreachable: %w", err)
	}
	return err
}
