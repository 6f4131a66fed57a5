package apicheck

// layers says, for each public package of the module (path relative to the module
// root), which other packages of the module it may import. Packages not listed
// (commands, examples, benchmarks, internal test support, interop tests) may import
// anything; a new public package must be added here. internal/jsonx (the JSON
// byte checks written once) may be imported by the packet format and what
// carries packets; internal/gotrack (the goroutine count Shutdown waits for) by
// the two servers; internal/clusterwire (the cluster's message encoders, which
// cluster sets) by cluster and the emitter.
//
//	engineio, bus, parser                import nothing of the module
//	bus/redisbus                         the bus it implements
//	adapter                              the packet format it carries
//	socketio                             engineio, adapter, the packet format
//	cluster                              adapter and bus, the packet format
//	emitter                              bus and cluster, the packet format
//	compat                               adapter, the packet format (Node's wire)
//	admin                                socketio (an application of the server)
var layers = map[string][]string{
	"engineio":            {"internal/gotrack"},
	"bus":                 {},
	"parser":              {"internal/jsonx"},
	"bus/redisbus":        {"bus"},
	"adapter":             {"parser", "internal/jsonx"},
	"adapter/adaptertest": {"adapter", "parser"},
	"socketio":            {"engineio", "adapter", "parser", "internal/gotrack"},
	"cluster":             {"adapter", "bus", "parser", "internal/jsonx", "internal/clusterwire"},
	"emitter":             {"adapter", "bus", "cluster", "parser", "internal/clusterwire"},
	"compat":              {"adapter", "parser"},
	"admin":               {"socketio"},
}
