package function

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
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

// userCacheTTL is how long validate reuses a user's row for tokens that match it: the bound
// on how long a token is still honoured after its user is deleted or demoted, or changes
// password (upload and download add their VALIDATE_CACHE_TTL). A token that does not match
// the cached row is always checked against MySQL, so refusals are never stale.
const userCacheTTL = 5 * time.Second

// userCacheMax bounds the cache's memory: when full, it starts again empty.
const userCacheMax = 10_000

type userKey struct {
	id    int64
	email string
}

// userRow is what validate needs of a user: is_admin and credential_version.
type userRow struct {
	admin   bool
	version int64
}

type cachedUser struct {
	userRow
	until time.Time
}

// userCache holds the rows of users that MySQL recently found, for userCacheTTL.
type userCache struct {
	now  func() time.Time
	mu   sync.Mutex
	rows map[userKey]cachedUser
}

func newUserCache(now func() time.Time) *userCache {
	return &userCache{now: now, rows: map[userKey]cachedUser{}}
}

// get returns the row of k if it was found less than userCacheTTL ago.
func (c *userCache) get(k userKey) (userRow, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	u, ok := c.rows[k]
	if !ok || !c.now().Before(u.until) {
		return userRow{}, false
	}
	return u.userRow, true
}

func (c *userCache) put(k userKey, row userRow) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.rows) >= userCacheMax {
		clear(c.rows)
	}
	c.rows[k] = cachedUser{userRow: row, until: c.now().Add(userCacheTTL)}
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
