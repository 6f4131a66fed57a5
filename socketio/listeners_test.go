package socketio

import (
	"strconv"
	"testing"
)

// The listener table is a slice for a few events and a map beyond; both must
// answer alike while events come and go.
func TestListenerTable(t *testing.T) {
	var tab listenerTable
	want := map[string]int{}
	check := func(step string) {
		t.Helper()
		for i := range 3 * fewEvents {
			ev := "e" + strconv.Itoa(i)
			if got := len(tab.get(ev)); got != want[ev] {
				t.Fatalf("%s: %d listeners of %s, want %d", step, got, ev, want[ev])
			}
		}
	}
	add := func(ev string) {
		tab.set(ev, append(tab.get(ev), newListener(nil)))
		want[ev]++
	}
	for i := range fewEvents {
		add("e" + strconv.Itoa(i))
	}
	add("e0")
	check("few")
	if tab.many != nil {
		t.Fatalf("a map for %d events", fewEvents)
	}
	tab.set("e3", nil)
	delete(want, "e3")
	tab.set("missing", nil)
	check("few, one removed")
	for i := fewEvents; i < 2*fewEvents; i++ {
		add("e" + strconv.Itoa(i))
	}
	check("many")
	if tab.many == nil {
		t.Fatalf("no map for %d events", len(want))
	}
	tab.set("e0", tab.get("e0")[:1])
	want["e0"] = 1
	tab.set("e1", nil)
	delete(want, "e1")
	check("many, changed")
}
