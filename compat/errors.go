package compat

import "errors"

// Errors of the package.
var (
	// ErrClosed is returned by NodeCluster.Adapter and Listener.Wrap after Close.
	ErrClosed = errors.New("compat: closed")
	// ErrNamespaceTaken is returned by NodeCluster.Adapter for a namespace
	// that already has an adapter.
	ErrNamespaceTaken = errors.New("compat: namespace already has an adapter")

	errSubscriptionEnded = errors.New("compat: subscription ended")
)
