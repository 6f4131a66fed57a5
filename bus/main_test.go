package bus

import (
	"testing"

	"go.uber.org/goleak"
)

// The TestRedis* tests start Redis servers of their own (internal/redistest),
// share nothing with the others and mostly wait on Redis: they call t.Parallel.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
