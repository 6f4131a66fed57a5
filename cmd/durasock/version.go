package main

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
)

// version can be set at build time:
//
//	go build -ldflags "-X main.version=v1.2.3" ./cmd/durasock
//
// Without it the module version is used (set by go install ...@version), or
// "(devel)" for a build from a checkout.
var version = ""

// buildInfo says which build of durasock runs.
type buildInfo struct {
	Version   string `json:"version"`
	GoVersion string `json:"go_version"`
	Revision  string `json:"revision,omitempty"` // VCS commit, when built from a checkout
	Time      string `json:"revision_time,omitempty"`
	Modified  bool   `json:"modified,omitempty"` // the checkout had uncommitted changes
}

func readBuildInfo() buildInfo {
	b := buildInfo{Version: version, GoVersion: runtime.Version()}
	if bi, ok := debug.ReadBuildInfo(); ok {
		if b.Version == "" {
			b.Version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				b.Revision = s.Value
			case "vcs.time":
				b.Time = s.Value
			case "vcs.modified":
				b.Modified = s.Value == "true"
			}
		}
	}
	if b.Version == "" {
		b.Version = "(devel)"
	}
	return b
}

// String is the line of -version.
func (b buildInfo) String() string {
	s := fmt.Sprintf("durasock %s %s %s/%s", b.Version, b.GoVersion, runtime.GOOS, runtime.GOARCH)
	if b.Revision != "" {
		s += " revision " + b.Revision
		if b.Modified {
			s += " (modified)"
		}
		if b.Time != "" {
			s += " " + b.Time
		}
	}
	return s
}

// collector is the durasock_build_info metric: always 1, the build in labels.
func (b buildInfo) collector() prometheus.Collector {
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "durasock_build_info",
		Help: "Always 1; the labels say which build of durasock runs.",
		ConstLabels: prometheus.Labels{
			"version": b.Version, "goversion": b.GoVersion, "revision": b.Revision,
		},
	})
	g.Set(1)
	return g
}
