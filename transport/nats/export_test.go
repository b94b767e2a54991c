package nats

// StopServer and StartServer stop and restart the embedded server on the
// same port and directory, for tests of outages.
func (b *Broker) StopServer() {
	b.mu.Lock()
	s := b.srv
	b.srv = nil
	b.mu.Unlock()
	s.Shutdown()
	s.WaitForShutdown()
}

func (b *Broker) StartServer() error { return b.startServer() }
