package dev.pglock.spring.boot.autoconfigure;

import dev.pglock.core.LockClient;
import dev.pglock.core.LockInfo;
import dev.pglock.core.LockMode;
import java.time.Instant;
import java.util.List;
import java.util.function.Supplier;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import org.springframework.boot.actuate.endpoint.Access;
import org.springframework.boot.actuate.endpoint.InvalidEndpointRequestException;
import org.springframework.boot.actuate.endpoint.SecurityContext;
import org.springframework.boot.actuate.endpoint.annotation.DeleteOperation;
import org.springframework.boot.actuate.endpoint.annotation.Endpoint;
import org.springframework.boot.actuate.endpoint.annotation.ReadOperation;
import org.springframework.boot.actuate.endpoint.annotation.Selector;

/**
 * The {@code pglock} Actuator endpoint, on the application's lock client (the {@code pglock.mode}
 * one). {@code GET /actuator/pglock} lists every lock the client can see: its own with keys, fencing
 * token, acquired-at, expiry and data size, and other holders as far as the mode shows them (lease:
 * everything in the table; advisory: lock ids, backend pid and application name, keys only for its
 * own). {@code GET /actuator/pglock/{key}} reads one (404 when nobody holds it).
 *
 * <p>{@code DELETE /actuator/pglock/{key}} force-releases a stuck lease row, for operators only: its
 * holder is not asked and learns at its next heartbeat that the lock was taken over, so for up to one
 * heartbeat interval two holders may run. Each call is logged at WARN with the principal that made it.
 * Lease mode only. Read-only by default: Spring Boot allows writing with
 * {@code management.endpoint.pglock.access=unrestricted}, and also with the older
 * {@code management.endpoint.pglock.enabled=true} or {@code management.endpoints.access.default=unrestricted}.
 */
@Endpoint(id = "pglock", defaultAccess = Access.READ_ONLY)
public class PgLockEndpoint {

    private static final Logger log = LoggerFactory.getLogger(PgLockEndpoint.class);

    private final Supplier<LockClient> client;

    /** @param client the lock client to show (the starter passes the {@code pglock.mode} one) */
    public PgLockEndpoint(Supplier<LockClient> client) {
        this.client = client;
    }

    /** Every lock the client can see. */
    @ReadOperation
    public Locks locks() {
        LockClient c = client.get();
        return new Locks(c.mode().name().toLowerCase(java.util.Locale.ROOT), c.owner(),
                c.list().stream().map(LockView::of).toList());
    }

    /** One lock; null (404) when nobody holds it. */
    @ReadOperation
    public LockView lock(@Selector String key) {
        return client.get().get(checked(key)).map(LockView::of).orElse(null);
    }

    /** A key pglock could never have taken is the caller's mistake (400), not the server's (500). */
    private static String checked(String key) {
        try {
            dev.pglock.core.LockRequest.of(key);
            return key;
        } catch (IllegalArgumentException e) {
            throw new InvalidEndpointRequestException(e.getMessage(), "not a lock key: " + e.getMessage());
        }
    }

    /** Force-releases a lease row whoever holds it; null (404) when nobody held it. */
    @DeleteOperation
    public LockView forceRelease(@Selector String key, SecurityContext security) {
        LockClient c = client.get();
        if (c.mode() != LockMode.LEASE) {
            throw new InvalidEndpointRequestException("an advisory lock cannot be force-released: it belongs to its"
                    + " holder's database session; end that session instead (pg_terminate_backend(pid), the pid is"
                    + " in GET /actuator/pglock)", "advisory locks cannot be force-released");
        }
        checked(key);
        String who = security.getPrincipal() != null ? security.getPrincipal().getName() : "an anonymous caller";
        log.warn("pglock: force-release of lock '{}' requested through the actuator endpoint by {}", key, who);
        LockView released = c.forceRelease(key).map(LockView::of).orElse(null);
        log.warn("pglock: lock '{}' force-released through the actuator endpoint by {}: {}", key, who,
                released == null ? "nobody held it" : "it was held by " + released.holders()
                        + "; its holder learns it at its next heartbeat");
        return released;
    }

    /** What {@code GET /actuator/pglock} answers. */
    public record Locks(String mode, String owner, List<LockView> locks) {
    }

    /**
     * One lock as the endpoint shows it. A semaphore's permit shows the semaphore's key with
     * {@code permit} (from 0) and {@code permits} set; force-releasing the key frees a lock of that
     * name, never a permit.
     */
    public record LockView(String key, String namespace, String mode, List<String> holders, boolean mine,
            boolean shared, Long fencingToken, Instant acquiredAt, Instant expiresAt, Integer dataBytes,
            Long lockId, Integer pid, String applicationName, Integer permit, Integer permits) {

        static LockView of(LockInfo info) {
            return new LockView(info.key().orElse(null), info.namespace().orElse(null),
                    info.mode().name().toLowerCase(java.util.Locale.ROOT), info.holders(), info.isHeldByThisClient(),
                    info.isShared(), info.fencingToken().isPresent() ? info.fencingToken().getAsLong() : null,
                    info.acquiredAt().orElse(null), info.expiresAt().orElse(null),
                    info.data().map(d -> d.length).orElse(null),
                    info.lockId().isPresent() ? info.lockId().getAsLong() : null, info.pid().orElse(null),
                    info.applicationName().orElse(null),
                    info.permit().isPresent() ? info.permit().getAsInt() : null,
                    info.permits().isPresent() ? info.permits().getAsInt() : null);
        }
    }
}
