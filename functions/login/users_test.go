package function

import (
	"context"
	"errors"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"
)

// The plain API the root module's CLI uses, straight against MySQL.
func TestUserStore(t *testing.T) {
	ctx := context.Background()
	dsn := testDSN(t)
	for range 2 { // idempotent
		if err := MigrateDSN(ctx, dsn); err != nil {
			t.Fatalf("MigrateDSN: %v", err)
		}
	}
	db, err := OpenDB(dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()

	if n, err := CountUsers(ctx, db); err != nil || n != 0 {
		t.Fatalf("CountUsers = %d, %v", n, err)
	}
	alice, err := AddUser(ctx, db, "Alice@Example.com", "password one", true, bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	if alice.ID < 1 || alice.Email != "alice@example.com" || !alice.Admin || alice.CreatedAt.IsZero() || alice.CreatedAt.Location().String() != "UTC" {
		t.Errorf("AddUser = %+v", alice)
	}
	if _, err := AddUser(ctx, db, "bob@example.com", "password two", false, bcrypt.MinCost); err != nil {
		t.Fatal(err)
	}

	errCases := []struct {
		name, email, password string
		want                  error
	}{
		{"duplicate", "alice@example.com", "password one", ErrDuplicateUser},
		{"duplicate in other case", "ALICE@example.com", "password one", ErrDuplicateUser},
		{"no at sign", "alice", "password one", ErrInvalidEmail},
		{"empty", "", "password one", ErrInvalidEmail},
		{"display name", "Alice <x@example.com>", "password one", ErrInvalidEmail},
		{"spaces", " x@example.com", "password one", ErrInvalidEmail},
		{"too long", strings.Repeat("x", 244) + "@example.com", "password one", ErrInvalidEmail},
		{"7-byte password", "c@example.com", "1234567", ErrWeakPassword},
		{"73-byte password", "c@example.com", strings.Repeat("p", 73), ErrWeakPassword},
	}
	for _, c := range errCases {
		t.Run(c.name, func(t *testing.T) {
			if _, err := AddUser(ctx, db, c.email, c.password, false, bcrypt.MinCost); !errors.Is(err, c.want) {
				t.Errorf("AddUser(%q) = %v, want %v", c.email, err, c.want)
			}
		})
	}
	if _, err := AddUser(ctx, db, strings.Repeat("x", 243)+"@example.com", strings.Repeat("p", 72), false, bcrypt.MinCost); err != nil {
		t.Errorf("255-byte email, 72-byte password: %v", err)
	}

	users, err := ListUsers(ctx, db)
	if err != nil || len(users) != 3 || users[0].Email != "alice@example.com" || users[1].Email != "bob@example.com" {
		t.Fatalf("ListUsers = %+v, %v", users, err)
	}
	if err := SetPassword(ctx, db, "bob@example.com", "password three", bcrypt.MinCost); err != nil {
		t.Errorf("SetPassword: %v", err)
	}
	c, err := lookupCredentials(ctx, db, "bob@example.com")
	if err != nil || bcrypt.CompareHashAndPassword(c.hash, []byte("password three")) != nil {
		t.Errorf("password not changed: %v", err)
	}
	if err := SetPassword(ctx, db, "nobody@example.com", "password three", bcrypt.MinCost); !errors.Is(err, ErrUnknownUser) {
		t.Errorf("SetPassword(unknown) = %v", err)
	}
	if err := SetPassword(ctx, db, "bob@example.com", "short", bcrypt.MinCost); !errors.Is(err, ErrWeakPassword) {
		t.Errorf("SetPassword(weak) = %v", err)
	}
	if err := DeleteUser(ctx, db, "BOB@example.com"); err != nil {
		t.Errorf("DeleteUser: %v", err)
	}
	if err := DeleteUser(ctx, db, "bob@example.com"); !errors.Is(err, ErrUnknownUser) {
		t.Errorf("DeleteUser again = %v", err)
	}
	if _, err := lookupCredentials(ctx, db, "bob@example.com"); !errors.Is(err, ErrUnknownUser) {
		t.Errorf("lookup of deleted user = %v", err)
	}
	if n, err := CountUsers(ctx, db); err != nil || n != 2 {
		t.Errorf("CountUsers = %d, %v", n, err)
	}
	if admin, version, err := currentUser(ctx, db, alice.ID, "alice@example.com"); err != nil || !admin || version != 0 {
		t.Errorf("currentUser = %v, %v, %v", admin, version, err)
	}
	if _, _, err := currentUser(ctx, db, alice.ID, "bob@example.com"); !errors.Is(err, ErrUnknownUser) {
		t.Errorf("currentUser(wrong email) = %v", err)
	}
}

// TestEmailsAreBytes: under a case- and accent-insensitive collation (MySQL 8.4's default,
// MariaDB's utf8mb4_general_ci) "cärol@" found carol's row, and the token carried the
// variant spelling. The migration turns an older table's email column binary, keeps its
// rows and adds credential_version; after it the two addresses are two users.
func TestEmailsAreBytes(t *testing.T) {
	ctx := context.Background()
	dsn := testDSN(t)
	cfg, err := ParseDSN(dsn)
	if err != nil {
		t.Fatal(err)
	}
	server := cfg.Clone()
	server.DBName = ""
	admin, err := openConfig(server)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	q := quoteIdent(cfg.DBName)
	for _, stmt := range []string{
		"CREATE DATABASE " + q,
		// The table as the previous login made it, under an insensitive collation.
		"CREATE TABLE " + q + `.users (
	id BIGINT AUTO_INCREMENT PRIMARY KEY,
	email VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci NOT NULL UNIQUE,
	password_hash VARCHAR(255) NOT NULL,
	is_admin BOOL NOT NULL DEFAULT FALSE,
	created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
)`,
	} {
		if _, err := admin.ExecContext(ctx, stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	db, err := OpenDB(dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	carol, err := AddUser(ctx, db, "carol@example.com", "carols password", false, bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 { // idempotent
		if err := MigrateDSN(ctx, dsn); err != nil {
			t.Fatalf("MigrateDSN over the old table: %v", err)
		}
	}
	// go-mysql-server's sessions keep the schema they saw: a new pool, as login has.
	db.Close()
	if db, err = OpenDB(dsn); err != nil {
		t.Fatal(err)
	}
	if _, err := lookupCredentials(ctx, db, "cärol@example.com"); !errors.Is(err, ErrUnknownUser) {
		t.Errorf("cärol@ finds a row: %v", err)
	}
	other, err := AddUser(ctx, db, "cärol@example.com", "another password", false, bcrypt.MinCost)
	if err != nil {
		t.Fatalf("cärol@ next to carol@: %v", err)
	}
	c, err := lookupCredentials(ctx, db, "carol@example.com")
	if err != nil || c.id != carol.ID || c.email != "carol@example.com" || c.version != 0 || other.ID == carol.ID {
		t.Errorf("carol after the migration: %+v, %v (cärol is %d)", c, err, other.ID)
	}
}
