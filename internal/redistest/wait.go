package redistest

import (
	"context"
	"fmt"
	"time"
)

// waitUntil calls check every interval until it returns nil or ctx ends; then it
// returns ctx's error wrapped with the last check error.
func waitUntil(ctx context.Context, interval time.Duration, what string, check func(ctx context.Context) error) error {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		err := check(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("redistest: waiting for %s: %w (last: %v)", what, ctx.Err(), err)
		case <-tick.C:
		}
	}
}

// withDefaultTimeout bounds ctx by d when it has no deadline.
func withDefaultTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, d)
}

// pairs turns a flattened field/value array reply into a map.
func pairs(v any) (map[string]string, error) {
	arr, ok := v.([]any)
	if !ok || len(arr)%2 != 0 {
		return nil, fmt.Errorf("%w: want field/value pairs, got %T", ErrProtocol, v)
	}
	m := make(map[string]string, len(arr)/2)
	for i := 0; i < len(arr); i += 2 {
		k, _ := arr[i].(string)
		switch val := arr[i+1].(type) {
		case string:
			m[k] = val
		case int64:
			m[k] = fmt.Sprint(val)
		default:
			m[k] = fmt.Sprint(val)
		}
	}
	return m, nil
}
