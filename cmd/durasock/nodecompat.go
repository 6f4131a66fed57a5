package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"slices"
	"strings"

	"github.com/redis/rueidis"

	"github.com/durasock/durasock/adapter"
	"github.com/durasock/durasock/bus/redisbus"
	"github.com/durasock/durasock/compat"
	"github.com/durasock/durasock/socketio"
)

// Values of -cluster-protocol.
const (
	protocolDurasock = "durasock"           // durasock's cluster bus (-redis-transport)
	protocolNode     = "node-redis-adapter" // @socket.io/redis-adapter createAdapter
	protocolSharded  = "node-sharded"       // @socket.io/redis-adapter createShardedAdapter
)

// compatConfig is what the binary is told about the Socket.IO deployments it
// joins or listens to.
type compatConfig struct {
	Protocol      string
	Emitters      []string // "node", "python"
	Key           string
	PythonChannel string
	emitters      string
}

func registerCompatFlags(fs *flag.FlagSet, c *compatConfig) {
	fs.StringVar(&c.Protocol, "cluster-protocol", protocolDurasock, `how the nodes of a cluster talk through -redis: "durasock" (its cluster bus, see -redis-transport), "node-redis-adapter" or "node-sharded" (the protocol of @socket.io/redis-adapter, classic or sharded pub/sub, to run in one cluster with Node socket.io servers)`)
	fs.StringVar(&c.emitters, "emitters", "", `comma-separated emitters whose messages this node applies from -redis: "node" (@socket.io/redis-emitter) and "python" (python-socketio's pub/sub managers, JSON form)`)
	fs.StringVar(&c.Key, "socketio-key", compat.DefaultKey, "channel prefix of @socket.io/redis-adapter and @socket.io/redis-emitter (their key option)")
	fs.StringVar(&c.PythonChannel, "python-channel", compat.DefaultPythonChannel, "channel of python-socketio's pub/sub managers")
}

// validate checks the compat flags against the rest of the configuration.
func (c *compatConfig) validate(redisURL string) error {
	c.Emitters = nil
	for _, e := range strings.Split(c.emitters, ",") {
		switch e = strings.TrimSpace(e); e {
		case "":
		case "node", "python":
			if !slices.Contains(c.Emitters, e) {
				c.Emitters = append(c.Emitters, e)
			}
		default:
			return fmt.Errorf("-emitters: %q: want node or python", e)
		}
	}
	switch c.Protocol {
	case protocolDurasock:
	case protocolNode, protocolSharded:
		if redisURL == "" {
			return fmt.Errorf("-cluster-protocol %s needs -redis", c.Protocol)
		}
	default:
		return fmt.Errorf("-cluster-protocol %q: want %s, %s or %s", c.Protocol, protocolDurasock, protocolNode, protocolSharded)
	}
	if len(c.Emitters) > 0 && redisURL == "" {
		return errors.New("-emitters needs -redis")
	}
	return nil
}

// usesBus reports whether the durasock cluster bus serves the cluster.
func (c *compatConfig) usesBus() bool { return c.Protocol == protocolDurasock }

// compatState is what setupCompat started.
type compatState struct {
	client   rueidis.Client
	node     *compat.NodeCluster
	listener *compat.Listener
}

// setupCompat joins a Node cluster (-cluster-protocol node-*) and starts the
// emitter listeners (-emitters), changing opts.Adapter accordingly.
func (a *app) setupCompat(cfg *config, opts *socketio.Options) (err error) {
	c := &cfg.Compat
	emitters := slices.Clone(c.Emitters)
	if c.Protocol == protocolNode {
		// The classic dialect hears the Node emitter by itself.
		emitters = slices.DeleteFunc(emitters, func(e string) bool { return e == "node" })
	}
	if c.usesBus() && len(emitters) == 0 {
		return nil
	}
	ropt, err := redisbus.ParseURL(cfg.RedisURL)
	if err != nil {
		return fmt.Errorf("redis: %w", err)
	}
	client, err := rueidis.NewClient(ropt)
	if err != nil {
		return fmt.Errorf("redis: %w", err)
	}
	st := &compatState{client: client}
	a.compat = st
	defer func() {
		if err != nil {
			_ = a.closeCompat(context.Background())
			a.compat = nil
		}
	}()
	if !c.usesBus() {
		mode := compat.Classic
		if c.Protocol == protocolSharded {
			mode = compat.Sharded
		}
		st.node, err = compat.NewNodeCluster(client, &compat.Options{Mode: mode, Key: c.Key, Logger: a.log, Registerer: a.registry})
		if err != nil {
			return fmt.Errorf("%s: %w", c.Protocol, err)
		}
		opts.Adapter = st.node.Adapter
		a.log.Info("cluster protocol", "protocol", c.Protocol, "redis", redactURL(cfg.RedisURL), "uid", st.node.UID(), "key", c.Key)
	}
	if len(emitters) > 0 {
		st.listener, err = compat.NewListener(client, &compat.ListenerOptions{
			Node: slices.Contains(emitters, "node"), Key: c.Key,
			Python: slices.Contains(emitters, "python"), PythonChannel: c.PythonChannel,
			Logger: a.log, Registerer: a.registry,
		})
		if err != nil {
			return fmt.Errorf("emitters: %w", err)
		}
		inner := opts.Adapter
		if inner == nil {
			inner = adapter.NewMemory
		}
		opts.Adapter = st.listener.Wrap(inner)
		a.log.Info("emitter listeners", "emitters", strings.Join(emitters, ","), "key", c.Key, "python_channel", c.PythonChannel)
	}
	return nil
}

// closeCompat stops what setupCompat started, after the Socket.IO server.
func (a *app) closeCompat(ctx context.Context) error {
	st := a.compat
	if st == nil {
		return nil
	}
	var errs []error
	if st.listener != nil {
		errs = append(errs, st.listener.Close(ctx))
	}
	if st.node != nil {
		errs = append(errs, st.node.Close(ctx))
	}
	st.client.Close()
	return errors.Join(errs...)
}
