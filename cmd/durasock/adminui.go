package main

import (
	"errors"
	"flag"
	"fmt"
	"net/http"

	"golang.org/x/crypto/bcrypt"

	"github.com/durasock/durasock/admin"
	"github.com/durasock/durasock/parser"
)

// adminUIPath is where -admin-ui-dir is served.
const adminUIPath = "/admin/"

// adminConfig holds the flags of the parser and of the Admin UI.
type adminConfig struct {
	Parser       string
	Enabled      bool
	User         string
	PasswordHash string
	NoAuth       bool
	ReadOnly     bool
	UIDir        string
}

func (c *adminConfig) flags(fs *flag.FlagSet) {
	fs.StringVar(&c.Parser, "parser", "json", `Socket.IO parser of every client: "json" (default) or "msgpack" (clients with socket.io-msgpack-parser)`)
	fs.BoolVar(&c.Enabled, "admin-ui", false, "serve the Socket.IO Admin UI namespace /admin (@socket.io/admin-ui)")
	fs.StringVar(&c.User, "admin-ui-user", "admin", "Admin UI username")
	fs.StringVar(&c.PasswordHash, "admin-ui-password-hash", "", "bcrypt hash of the Admin UI password, e.g. from `htpasswd -nbBC 10 \"\" secret | cut -d: -f2`")
	fs.BoolVar(&c.NoAuth, "admin-ui-no-auth", false, "let the Admin UI in without a password")
	fs.BoolVar(&c.ReadOnly, "admin-ui-readonly", false, "Admin UI watches only: no emit, join, leave or disconnect")
	fs.StringVar(&c.UIDir, "admin-ui-dir", "", "serve the Admin UI build from this directory at "+adminUIPath+" (node_modules/@socket.io/admin-ui/ui/dist after npm install @socket.io/admin-ui)")
}

func (c *adminConfig) check() error {
	switch c.Parser {
	case "json", "msgpack":
	default:
		return fmt.Errorf("-parser %q: want json or msgpack", c.Parser)
	}
	if !c.Enabled {
		if c.UIDir != "" {
			return errors.New("-admin-ui-dir needs -admin-ui")
		}
		return nil
	}
	if c.UIDir != "" {
		if _, err := admin.UIHandler(c.UIDir); err != nil {
			return fmt.Errorf("-admin-ui-dir: %w", err)
		}
	}
	if c.PasswordHash == "" && !c.NoAuth {
		return errors.New("-admin-ui needs -admin-ui-password-hash (a bcrypt hash) or -admin-ui-no-auth")
	}
	if c.PasswordHash != "" {
		if _, err := bcrypt.Cost([]byte(c.PasswordHash)); err != nil {
			return fmt.Errorf("-admin-ui-password-hash is not a bcrypt hash: %w", err)
		}
	}
	return nil
}

// parser is the parser the flags chose.
func (c *adminConfig) parser() parser.Parser {
	if c.Parser == "msgpack" {
		return parser.Msgpack
	}
	return parser.JSON
}

// startAdmin instruments the Socket.IO server when -admin is given.
func (a *app) startAdminUI() error {
	c := &a.cfg.Admin
	if !c.Enabled {
		return nil
	}
	opts := &admin.Options{ReadOnly: c.ReadOnly, NoAuth: c.PasswordHash == "", Logger: a.log}
	if c.PasswordHash != "" {
		opts.Auth = &admin.BasicAuth{Username: c.User, Password: c.PasswordHash}
	}
	if a.bus != nil {
		opts.ServerID = a.bus.NodeID()
	}
	ad, err := admin.New(a.sio, opts)
	if err != nil {
		return err
	}
	a.adminUI = ad
	a.log.Info("admin UI namespace", "namespace", admin.DefaultNamespace, "readonly", c.ReadOnly, "auth", !opts.NoAuth)
	return nil
}

// mountAdmin serves the Admin UI build when -admin-ui-dir is given.
func (a *app) mountAdminUI(mux *http.ServeMux) {
	if a.cfg.Admin.UIDir == "" {
		return
	}
	h, err := admin.UIHandler(a.cfg.Admin.UIDir)
	if err != nil { // checked with the flags; the directory went away since
		a.log.Error("admin UI not served", "err", err)
		return
	}
	mux.Handle(adminUIPath, http.StripPrefix(adminUIPath, h))
}

// stopAdmin stops the statistics of the instrumentation.
func (a *app) stopAdminUI() {
	if a.adminUI != nil {
		a.adminUI.Close()
	}
}
