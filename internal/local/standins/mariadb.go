package standins

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/go-sql-driver/mysql"
)

// MariaDB is a private mariadbd, a child process of this one, serving one
// folder: users kept there survive a restart of the stack. It listens on a
// unix socket only, so it needs no port and nothing else can reach it over
// the network.
type MariaDB struct {
	DSN     string // for go-sql-driver/mysql, database "auth"
	Dir     string
	cmd     *exec.Cmd
	exited  chan struct{}
	waitErr error
}

// ErrNoMariaDB means no MariaDB (or MySQL) server is installed here.
var ErrNoMariaDB = errors.New("no mariadbd or mysqld installed")

// MariaDBInstalled tells whether StartMariaDB can find a server to start.
func MariaDBInstalled() bool {
	_, _, err := findMariaDB()
	return err == nil
}

// StartMariaDB starts a private MariaDB server with its data in dir,
// initialising the folder at the first start, and returns once it answers.
func StartMariaDB(ctx context.Context, dir string) (*MariaDB, error) {
	server, installer, err := findMariaDB()
	if err != nil {
		return nil, err
	}
	if dir, err = filepath.Abs(dir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("mariadb: %w", err)
	}
	data := filepath.Join(dir, "data")
	if err := initialise(ctx, installer, data); err != nil {
		return nil, err
	}

	socket := socketPath(dir)
	args := append(serverOptions(data),
		"--socket="+socket,
		"--skip-networking",
		"--pid-file="+filepath.Join(dir, "mariadbd.pid"),
		"--log-error="+filepath.Join(dir, "mariadbd.err"),
	)
	cmd := exec.Command(server, args...)
	cmd.SysProcAttr = childProcess()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("mariadb: %w", err)
	}
	m := &MariaDB{Dir: dir, cmd: cmd, exited: make(chan struct{})}
	go func() {
		m.waitErr = cmd.Wait()
		close(m.exited)
	}()

	cfg := mysql.NewConfig()
	cfg.User = "root"
	cfg.Net = "unix"
	cfg.Addr = socket
	cfg.ParseTime = true
	if err := m.waitUntilAnswering(ctx, cfg.FormatDSN()); err != nil {
		m.Close()
		return nil, err
	}
	cfg.DBName = "auth"
	m.DSN = cfg.FormatDSN()
	return m, nil
}

// Close stops the server (SIGTERM: InnoDB shuts down cleanly) and waits for it.
func (m *MariaDB) Close() error {
	select {
	case <-m.exited:
		return nil
	default:
	}
	m.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-m.exited:
		return nil
	case <-time.After(30 * time.Second):
		m.cmd.Process.Kill()
		<-m.exited
		return errors.New("mariadb did not stop within 30 s: killed")
	}
}

// waitUntilAnswering pings dsn until the server answers, it exits, or a
// minute passes (a first start after a crash may recover InnoDB first).
func (m *MariaDB) waitUntilAnswering(ctx context.Context, dsn string) error {
	db, err := sql.Open("mysql", dsn)
	if err != nil {
		return err
	}
	defer db.Close()
	deadline := time.Now().Add(time.Minute)
	for {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		err = db.PingContext(pctx)
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-m.exited:
			return fmt.Errorf("mariadb exited at start: %v\n%s", m.waitErr, m.logTail())
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("mariadb did not answer within a minute: %v\n%s", err, m.logTail())
		}
	}
}

// logTail is the end of the server's error log, for a failure message.
func (m *MariaDB) logTail() string {
	b, _ := os.ReadFile(filepath.Join(m.Dir, "mariadbd.err"))
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

// serverOptions are the options both the installer and the server get: a
// small footprint fit for a laptop, and no configuration file of the system.
func serverOptions(data string) []string {
	opts := []string{
		"--no-defaults",
		"--datadir=" + data,
		"--innodb-buffer-pool-size=32M",
		"--innodb-log-file-size=16M",
	}
	if os.Geteuid() == 0 {
		opts = append(opts, "--user=root") // mariadbd refuses to run as root otherwise
	}
	return opts
}

// initialise creates the system tables in data at the first start. It
// installs into a sibling folder and renames it, so a start interrupted half
// way never leaves a folder that looks initialised.
func initialise(ctx context.Context, installer, data string) error {
	if _, err := os.Stat(filepath.Join(data, "mysql")); err == nil {
		return nil
	}
	tmp := data + ".init"
	os.RemoveAll(tmp)
	args := append(serverOptions(tmp), "--auth-root-authentication-method=normal", "--skip-test-db")
	cmd := exec.CommandContext(ctx, installer, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		os.RemoveAll(tmp)
		return fmt.Errorf("mariadb: initialising %s: %w\n%s", data, err, out.String())
	}
	return os.Rename(tmp, data)
}

// socketPath is the server's socket in dir, or in the temporary folder when
// dir's path is too long for a unix socket (108 bytes on Linux).
func socketPath(dir string) string {
	p := filepath.Join(dir, "mariadbd.sock")
	if len(p) < 100 {
		return p
	}
	return filepath.Join(os.TempDir(), fmt.Sprintf("mp3c-mariadbd-%d.sock", os.Getpid()))
}

// findMariaDB returns the server and installer programs, looked up in PATH
// and in the sbin folders, which a user's PATH often lacks.
func findMariaDB() (server, installer string, err error) {
	find := func(names ...string) string {
		for _, name := range names {
			if p, err := exec.LookPath(name); err == nil {
				return p
			}
			for _, dir := range []string{"/usr/sbin", "/usr/local/sbin", "/usr/local/bin", "/opt/homebrew/bin"} {
				p := filepath.Join(dir, name)
				if info, err := os.Stat(p); err == nil && !info.IsDir() {
					return p
				}
			}
		}
		return ""
	}
	server = find("mariadbd", "mysqld")
	installer = find("mariadb-install-db", "mysql_install_db")
	if server == "" || installer == "" {
		return "", "", ErrNoMariaDB
	}
	return server, installer, nil
}
