package stacktest

import (
	"database/sql"

	"github.com/go-sql-driver/mysql"
	amqp "github.com/rabbitmq/amqp091-go"
)

// IsolatedDSN points dsn at a database of its own, dbName; drop removes it.
func IsolatedDSN(dsn, dbName string) (isolated string, drop func(), err error) {
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		return "", nil, err
	}
	cfg.DBName = dbName
	cfg.ParseTime = true
	drop = func() {
		admin := *cfg
		admin.DBName = ""
		if db, err := sql.Open("mysql", admin.FormatDSN()); err == nil {
			db.Exec("DROP DATABASE IF EXISTS `" + dbName + "`")
			db.Close()
		}
	}
	return cfg.FormatDSN(), drop, nil
}

// QueueNames are the queues a stack with this broker prefix declares: one
// per Trigger, and the dead-letter queue.
func QueueNames(prefix string) []string {
	base := prefix + "mp3converter.default"
	return []string{base + ".convert", base + ".notify-converted", base + ".notify-failed", base + "._dlq"}
}

// QueueDepth is how many messages are ready in a queue.
func QueueDepth(url, queue string) (int, error) {
	conn, err := amqp.Dial(url)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return 0, err
	}
	defer ch.Close()
	q, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
	if err != nil {
		return 0, err
	}
	return q.Messages, nil
}

// DeleteBrokerTopology removes what a stack with this prefix declared.
func DeleteBrokerTopology(url, prefix string) error {
	conn, err := amqp.Dial(url)
	if err != nil {
		return err
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return err
	}
	for _, q := range QueueNames(prefix) {
		ch.QueueDelete(q, false, false, false)
	}
	base := prefix + "mp3converter.default"
	ch.ExchangeDelete(base, false, false)
	ch.ExchangeDelete(base+"._dlx", false, false)
	return nil
}
