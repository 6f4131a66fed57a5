package apicheck

// layers says, for each public package of the module (path relative to the module
// root), which other packages of the module it may import. Packages not listed
// (commands, examples, benchmarks, internal test support, interop tests) may import
// anything; a new public package must be added here.
//
//	engineio, bus, socketio/parser      import nothing of the module
//	bus/redisbus                         the bus it implements
//	adapter                              the packet format it carries
//	socketio                             engineio, adapter, the packet format
//	cluster                              adapter and bus, the packet format
//	emitter                              bus and cluster, the packet format
//	compat                               adapter, the packet format (Node's wire)
//	admin                                socketio (an application of the server)
var layers = map[string][]string{
	"engineio":            {},
	"bus":                 {},
	"socketio/parser":     {},
	"bus/redisbus":        {"bus"},
	"adapter":             {"socketio/parser"},
	"adapter/adaptertest": {"adapter", "socketio/parser"},
	"socketio":            {"engineio", "adapter", "socketio/parser"},
	"cluster":             {"adapter", "bus", "socketio/parser"},
	"emitter":             {"adapter", "bus", "cluster", "socketio/parser"},
	"compat":              {"adapter", "socketio/parser"},
	"admin":               {"socketio"},
}
