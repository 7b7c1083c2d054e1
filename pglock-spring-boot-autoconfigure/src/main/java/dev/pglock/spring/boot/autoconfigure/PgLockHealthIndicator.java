package dev.pglock.spring.boot.autoconfigure;

import dev.pglock.core.LockClient;
import dev.pglock.core.LockClientStatus;
import java.util.List;
import java.util.function.Supplier;
import org.springframework.boot.health.contributor.AbstractHealthIndicator;
import org.springframework.boot.health.contributor.Health;

/**
 * The {@code pglock} health indicator: UP when every lock client built so far works, DOWN with the
 * reason when one does not (lease: the heartbeat fails while locks are held, or the LISTEN connection
 * is down while callers wait; advisory: a lock session check failed and none succeeded since; both:
 * an idle lock session does not answer a trivial statement). Details per mode: held keys, locks lost
 * since start, lock sessions, waiting connections, and seconds since the last heartbeat or check.
 * It never takes a lock, and never waits for a connection or behind a caller (see
 * {@link LockClient#probe()}).
 */
public class PgLockHealthIndicator extends AbstractHealthIndicator {

    private final Supplier<List<LockClient>> clients;

    /** @param clients the clients to report on (the starter passes those built so far) */
    public PgLockHealthIndicator(Supplier<List<LockClient>> clients) {
        super("pglock health check failed");
        this.clients = clients;
    }

    @Override
    protected void doHealthCheck(Health.Builder builder) {
        builder.up();
        for (LockClient client : clients.get()) {
            LockClientStatus status = client.probe();
            String mode = status.mode().name().toLowerCase(java.util.Locale.ROOT);
            java.util.Map<String, Object> details = new java.util.LinkedHashMap<>();
            details.put("held", status.heldLocks());
            details.put("lost", status.lostLocks());
            details.put("lockSessions", status.lockSessions());
            details.put("waitingConnections", status.waitingConnections());
            status.sinceLastCheck().ifPresent(d -> details.put("secondsSinceLastCheck", d.toMillis() / 1000.0));
            status.problem().ifPresent(problem -> {
                details.put("problem", problem);
                builder.down();
            });
            builder.withDetail(mode, details);
        }
    }
}
