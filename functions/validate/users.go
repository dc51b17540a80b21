package function

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/go-sql-driver/mysql"
)

var errUserGone = errors.New("user no longer exists")

// currentUser returns the current is_admin and credential_version of the user with this
// id and email (compared byte for byte: login's migration makes the column utf8mb4_bin).
// A missing table is an error (MySQL not ready), not a missing user.
func currentUser(ctx context.Context, db *sql.DB, id int64, email string) (admin bool, version int64, err error) {
	err = db.QueryRowContext(ctx, "SELECT is_admin, credential_version FROM users WHERE id = ? AND email = ?", id, email).Scan(&admin, &version)
	if errors.Is(err, sql.ErrNoRows) {
		return false, 0, errUserGone
	}
	return admin, version, err
}

// openDB returns a pool for dsn (parseTime forced, 5 s dial timeout). It does not dial.
func openDB(dsn string) (*sql.DB, error) {
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		return nil, fmt.Errorf("MYSQL_DSN: %w", err)
	}
	if cfg.DBName == "" {
		return nil, errors.New("MYSQL_DSN must name the database that holds the users table")
	}
	cfg.ParseTime = true
	if cfg.Timeout == 0 {
		cfg.Timeout = dbTimeout
	}
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
