package bench

import (
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	NodeMain() // relay node processes are this test binary started again
	goleak.VerifyTestMain(m)
}
