package interop

import "testing"

// TestPythonClient runs python-socketio's client (Debian python3-socketio) over
// both transports: events both ways, acks both ways, binary, concurrent acks.
func TestPythonClient(t *testing.T) {
	python := requirePython(t)
	url := newContract(nil).start(t)
	for _, transport := range []string{"polling", "websocket"} {
		t.Run(transport, func(t *testing.T) {
			runScenario(t, scenarioTimeout, url, python, "py/client.py", transport)
		})
	}
}
