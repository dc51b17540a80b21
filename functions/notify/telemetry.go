package function

import "context"

// countEmail counts one email of kind by its outcome: sent, or failed (this attempt; the
// Broker retries a transient failure).
func countEmail(ctx context.Context, kind string, err error) {
	outcome := "sent"
	if err != nil {
		outcome = "failed"
	}
	metricsOf(ctx).email(ctx, kind, outcome)
}
