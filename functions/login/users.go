package function

// The user store: a small plain API over the MySQL users table, used by the HTTP
// handlers of this function and by the root module's CLI (`mp3converter user ...`).

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/mail"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
	"golang.org/x/crypto/bcrypt"
)

// User is a row of the users table, without its password hash.
type User struct {
	ID        int64     `json:"id"`
	Email     string    `json:"email"`
	Admin     bool      `json:"admin"`
	CreatedAt time.Time `json:"created_at"`
}

var (
	ErrDuplicateUser = errors.New("a user with this email already exists")
	ErrUnknownUser   = errors.New("no such user")
	ErrInvalidEmail  = errors.New("invalid email address")
	ErrWeakPassword  = errors.New("password must be 8 to 72 bytes long")
	ErrLastAdmin     = errors.New("the last admin cannot be deleted or demoted: make another user admin first")
)

const (
	maxEmailLen    = 255
	minPasswordLen = 8
	maxPasswordLen = 72 // bcrypt ignores everything after 72 bytes

	// email is compared byte for byte (utf8mb4_bin): under MySQL 8.4's default collation
	// "cärol@" and "Carol@" would find carol's row. credential_version goes up with every
	// password change, demotion and reset; tokens carry it and end when it moves on.
	emailColumn = "email VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL"
	usersDDL    = `CREATE TABLE IF NOT EXISTS %s.users (
	id BIGINT AUTO_INCREMENT PRIMARY KEY,
	` + emailColumn + ` UNIQUE,
	password_hash VARCHAR(255) NOT NULL,
	is_admin BOOL NOT NULL DEFAULT FALSE,
	credential_version BIGINT NOT NULL DEFAULT 0,
	created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
)`
	erDupEntry = 1062 // MySQL/MariaDB: duplicate entry for a unique key
)

// ParseDSN parses a go-sql-driver/mysql DSN, forces parseTime and a dial timeout,
// and insists on a database name.
func ParseDSN(dsn string) (*mysql.Config, error) {
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		return nil, fmt.Errorf("MYSQL_DSN: %w", err)
	}
	if cfg.DBName == "" {
		return nil, errors.New("MYSQL_DSN must name a database, e.g. root@tcp(127.0.0.1:3306)/auth")
	}
	cfg.ParseTime = true
	if cfg.Timeout == 0 {
		cfg.Timeout = 5 * time.Second
	}
	return cfg, nil
}

// OpenDB returns a connection pool for dsn (see ParseDSN). It does not dial.
func OpenDB(dsn string) (*sql.DB, error) {
	cfg, err := ParseDSN(dsn)
	if err != nil {
		return nil, err
	}
	return openConfig(cfg)
}

// MigrateDSN creates the DSN's database and the users table if they do not exist,
// through a connection that names no database (the database may not exist yet).
func MigrateDSN(ctx context.Context, dsn string) error {
	cfg, err := ParseDSN(dsn)
	if err != nil {
		return err
	}
	dbName := cfg.DBName
	cfg.DBName = ""
	db, err := openConfig(cfg)
	if err != nil {
		return err
	}
	defer db.Close()
	return Migrate(ctx, db, dbName)
}

// Migrate creates database dbName and its users table if they do not exist.
// db may be connected without a database name; every statement names dbName.
func Migrate(ctx context.Context, db *sql.DB, dbName string) error {
	q := quoteIdent(dbName)
	if _, err := db.ExecContext(ctx, "CREATE DATABASE IF NOT EXISTS "+q); err != nil {
		return fmt.Errorf("create database %s: %w", q, err)
	}
	if _, err := db.ExecContext(ctx, fmt.Sprintf(usersDDL, q)); err != nil {
		return fmt.Errorf("create table %s.users: %w", q, err)
	}
	return upgrade(ctx, db, dbName)
}

// upgrade brings a users table made by an older login up to date: the credential_version
// column, and the binary collation of email. information_schema answers on MariaDB, MySQL
// and go-mysql-server alike, where ADD COLUMN IF NOT EXISTS is MariaDB's only.
func upgrade(ctx context.Context, db *sql.DB, dbName string) error {
	q := quoteIdent(dbName)
	var collation sql.NullString
	var hasVersion bool
	rows, err := db.QueryContext(ctx, "SELECT COLUMN_NAME, COLLATION_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = 'users'", dbName)
	if err != nil {
		return fmt.Errorf("inspect %s.users: %w", q, err)
	}
	defer rows.Close()
	for rows.Next() {
		var name string
		var coll sql.NullString
		if err := rows.Scan(&name, &coll); err != nil {
			return fmt.Errorf("inspect %s.users: %w", q, err)
		}
		switch strings.ToLower(name) {
		case "email":
			collation = coll
		case "credential_version":
			hasVersion = true
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("inspect %s.users: %w", q, err)
	}
	if !hasVersion {
		if _, err := db.ExecContext(ctx, "ALTER TABLE "+q+".users ADD COLUMN credential_version BIGINT NOT NULL DEFAULT 0"); err != nil {
			return fmt.Errorf("add %s.users.credential_version: %w", q, err)
		}
	}
	if !strings.HasSuffix(strings.ToLower(collation.String), "_bin") {
		if _, err := db.ExecContext(ctx, "ALTER TABLE "+q+".users MODIFY "+emailColumn); err != nil {
			return fmt.Errorf("binary collation on %s.users.email: %w", q, err)
		}
	}
	return nil
}

// NormalizeEmail checks that s is a bare address (no display name) of at most
// 255 bytes and returns it lower-cased, the form stored and put in tokens.
func NormalizeEmail(s string) (string, error) {
	if s == "" || len(s) > maxEmailLen {
		return "", ErrInvalidEmail
	}
	addr, err := mail.ParseAddress(s)
	if err != nil || addr.Name != "" || addr.Address != s {
		return "", ErrInvalidEmail
	}
	return strings.ToLower(s), nil
}

// CheckPassword reports ErrWeakPassword unless password is 8 to 72 bytes long.
func CheckPassword(password string) error {
	if len(password) < minPasswordLen || len(password) > maxPasswordLen {
		return ErrWeakPassword
	}
	return nil
}

// AddUser creates a user with a bcrypt hash of password at the given cost
// (below bcrypt.MinCost, e.g. 0: bcrypt.DefaultCost).
func AddUser(ctx context.Context, db *sql.DB, email, password string, admin bool, cost int) (User, error) {
	email, err := NormalizeEmail(email)
	if err != nil {
		return User{}, err
	}
	hash, err := hashPassword(password, cost)
	if err != nil {
		return User{}, err
	}
	res, err := db.ExecContext(ctx, "INSERT INTO users (email, password_hash, is_admin) VALUES (?, ?, ?)", email, hash, admin)
	if isDuplicate(err) {
		return User{}, ErrDuplicateUser
	}
	if err != nil {
		return User{}, fmt.Errorf("insert user: %w", err)
	}
	id, err := res.LastInsertId()
	if err != nil {
		return User{}, fmt.Errorf("insert user: %w", err)
	}
	var u User
	err = db.QueryRowContext(ctx, "SELECT id, email, is_admin, created_at FROM users WHERE id = ?", id).
		Scan(&u.ID, &u.Email, &u.Admin, &u.CreatedAt)
	if err != nil {
		return User{}, fmt.Errorf("read back user: %w", err)
	}
	u.CreatedAt = u.CreatedAt.UTC()
	return u, nil
}

// ListUsers returns every user, oldest first.
func ListUsers(ctx context.Context, db *sql.DB) ([]User, error) {
	rows, err := db.QueryContext(ctx, "SELECT id, email, is_admin, created_at FROM users ORDER BY id")
	if err != nil {
		return nil, fmt.Errorf("list users: %w", err)
	}
	defer rows.Close()
	users := []User{}
	for rows.Next() {
		var u User
		if err := rows.Scan(&u.ID, &u.Email, &u.Admin, &u.CreatedAt); err != nil {
			return nil, fmt.Errorf("list users: %w", err)
		}
		u.CreatedAt = u.CreatedAt.UTC()
		users = append(users, u)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list users: %w", err)
	}
	return users, nil
}

// DeleteUser removes the user with this email, or reports ErrUnknownUser, or ErrLastAdmin.
func DeleteUser(ctx context.Context, db *sql.DB, email string) error {
	email, err := NormalizeEmail(email)
	if err != nil {
		return ErrUnknownUser
	}
	return changeKeepingAnAdmin(ctx, db, email, "DELETE FROM users WHERE email = ?", email)
}

// SetAdmin grants or takes away admin rights. Taking them ends the user's tokens
// (credential_version) and is refused for the last admin (ErrLastAdmin).
func SetAdmin(ctx context.Context, db *sql.DB, email string, admin bool) error {
	email, err := NormalizeEmail(email)
	if err != nil {
		return ErrUnknownUser
	}
	if admin {
		res, err := db.ExecContext(ctx, "UPDATE users SET is_admin = TRUE WHERE email = ?", email)
		if err != nil {
			return fmt.Errorf("set admin: %w", err)
		}
		if n, err := res.RowsAffected(); err == nil && n == 0 {
			_, err = lookupCredentials(ctx, db, email) // unchanged (already admin) or missing
			return err
		}
		return err
	}
	return changeKeepingAnAdmin(ctx, db, email,
		"UPDATE users SET is_admin = FALSE, credential_version = credential_version + 1 WHERE email = ?", email)
}

// changeKeepingAnAdmin runs statement (which deletes or demotes the user with email) in a
// transaction that first locks the admins' rows, so two admins cannot remove each other at once.
func changeKeepingAnAdmin(ctx context.Context, db *sql.DB, email, statement string, args ...any) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback()
	var admins int
	var targetAdmin bool
	rows, err := tx.QueryContext(ctx, "SELECT email FROM users WHERE is_admin = TRUE FOR UPDATE")
	if err != nil {
		return fmt.Errorf("lock admins: %w", err)
	}
	for rows.Next() {
		var e string
		if err := rows.Scan(&e); err != nil {
			rows.Close()
			return fmt.Errorf("lock admins: %w", err)
		}
		admins++
		targetAdmin = targetAdmin || e == email
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("lock admins: %w", err)
	}
	if targetAdmin && admins == 1 {
		return ErrLastAdmin
	}
	res, err := tx.ExecContext(ctx, statement, args...)
	if err != nil {
		return fmt.Errorf("change user: %w", err)
	}
	if err := affectedOne(res); err != nil {
		return err
	}
	return tx.Commit()
}

// SetPassword replaces the password of the user with this email.
func SetPassword(ctx context.Context, db *sql.DB, email, password string, cost int) error {
	email, err := NormalizeEmail(email)
	if err != nil {
		return ErrUnknownUser
	}
	hash, err := hashPassword(password, cost)
	if err != nil {
		return err
	}
	// A new credential version ends every token issued before (validate and authorize check it).
	res, err := db.ExecContext(ctx, "UPDATE users SET password_hash = ?, credential_version = credential_version + 1 WHERE email = ?", hash, email)
	if err != nil {
		return fmt.Errorf("set password: %w", err)
	}
	// MySQL counts changed rows only, and a new bcrypt salt always changes the row.
	return affectedOne(res)
}

// CountUsers returns the number of users (the CLI uses it to create a first admin).
func CountUsers(ctx context.Context, db *sql.DB) (int, error) {
	var n int
	if err := db.QueryRowContext(ctx, "SELECT COUNT(*) FROM users").Scan(&n); err != nil {
		return 0, fmt.Errorf("count users: %w", err)
	}
	return n, nil
}

// credentials is what login needs to check a password and issue a token.
type credentials struct {
	id      int64
	email   string // as stored: the token carries this spelling
	hash    []byte
	admin   bool
	version int64
}

// lookupCredentials returns the user's credentials, or ErrUnknownUser.
func lookupCredentials(ctx context.Context, db *sql.DB, email string) (credentials, error) {
	var c credentials
	err := db.QueryRowContext(ctx, "SELECT id, email, password_hash, is_admin, credential_version FROM users WHERE email = ?", email).
		Scan(&c.id, &c.email, &c.hash, &c.admin, &c.version)
	if errors.Is(err, sql.ErrNoRows) {
		return credentials{}, ErrUnknownUser
	}
	if err != nil {
		return credentials{}, fmt.Errorf("look up user: %w", err)
	}
	return c, nil
}

// currentUser returns is_admin and credential_version of the user with this id and
// email, or ErrUnknownUser.
func currentUser(ctx context.Context, db *sql.DB, id int64, email string) (admin bool, version int64, err error) {
	err = db.QueryRowContext(ctx, "SELECT is_admin, credential_version FROM users WHERE id = ? AND email = ?", id, email).Scan(&admin, &version)
	if errors.Is(err, sql.ErrNoRows) {
		return false, 0, ErrUnknownUser
	}
	if err != nil {
		return false, 0, fmt.Errorf("look up user: %w", err)
	}
	return admin, version, nil
}

func openConfig(cfg *mysql.Config) (*sql.DB, error) {
	conn, err := mysql.NewConnector(cfg)
	if err != nil {
		return nil, fmt.Errorf("MYSQL_DSN: %w", err)
	}
	db := sql.OpenDB(conn)
	db.SetMaxOpenConns(10)
	db.SetMaxIdleConns(5)
	db.SetConnMaxLifetime(5 * time.Minute)
	return db, nil
}

func hashPassword(password string, cost int) ([]byte, error) {
	if err := CheckPassword(password); err != nil {
		return nil, err
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(password), cost)
	if err != nil {
		return nil, fmt.Errorf("hash password: %w", err)
	}
	return hash, nil
}

func affectedOne(res sql.Result) error {
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if n == 0 {
		return ErrUnknownUser
	}
	return nil
}

func isDuplicate(err error) bool {
	var me *mysql.MySQLError
	return errors.As(err, &me) && me.Number == erDupEntry
}

func quoteIdent(name string) string {
	return "`" + strings.ReplaceAll(name, "`", "``") + "`"
}
