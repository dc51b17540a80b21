package stacktest

import (
	"bufio"
	"context"
	"net/http"
	"strconv"
	"strings"
)

// Metrics is one scrape of the stack's /metrics: each series ("name{label="value",...}")
// and its value.
type Metrics map[string]float64

// Metrics scrapes the /metrics `up` serves on web's address: every function's metrics.
func (s *Stack) Metrics(t TB) Metrics {
	t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, s.URL+"/metrics", nil)
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("metrics: %s", resp.Status)
	}
	m := Metrics{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if i < 0 || err != nil {
			t.Fatalf("metrics: unreadable line %q", line)
		}
		m[line[:i]] = v
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("metrics: %v", err)
	}
	return m
}

// Sum adds the series of the metric name that have every label given ("outcome", "done",
// ...); 0 when there is none.
func (m Metrics) Sum(name string, labels ...string) float64 {
	var sum float64
	for series, v := range m {
		n, rest, _ := strings.Cut(series, "{")
		if n != name {
			continue
		}
		ok := true
		for i := 0; i+1 < len(labels); i += 2 {
			if !strings.Contains(rest, labels[i]+`="`+labels[i+1]+`"`) {
				ok = false
			}
		}
		if ok {
			sum += v
		}
	}
	return sum
}
