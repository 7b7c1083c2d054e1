package dev.pglock.spring.boot.autoconfigure;

import dev.pglock.core.LockClient;
import dev.pglock.core.LockMode;
import dev.pglock.core.PgLock;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import javax.sql.DataSource;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import org.springframework.beans.factory.DisposableBean;

/**
 * The lock clients of the application, one per mode, built from {@code pglock.*} when first needed:
 * the configured mode's at start-up, the other only if a {@code @DistributedLock(mode = ...)} or
 * {@code LockTemplate.inMode(...)} asks for it. Closes them when the context closes.
 */
public class PgLockClients implements DisposableBean {

    private static final Logger log = LoggerFactory.getLogger(PgLockClients.class);

    private final PgLockProperties properties;
    private final DataSource dataSource;
    private final Map<LockMode, LockClient> clients = new ConcurrentHashMap<>();
    private volatile boolean closed;

    public PgLockClients(PgLockProperties properties, DataSource dataSource) {
        this.properties = properties;
        this.dataSource = dataSource;
    }

    /**
     * The client for {@code mode}, built on first use.
     *
     * @throws IllegalStateException once the application context is closing
     */
    public LockClient get(LockMode mode) {
        if (closed) {
            throw new IllegalStateException("the application context is closing: no new " + mode + " lock client");
        }
        return clients.computeIfAbsent(mode, this::build);
    }

    private LockClient build(LockMode mode) {
        return switch (mode) {
            case ADVISORY -> PgLock.advisory(dataSource)
                    .namespace(properties.getNamespace())
                    .lockSessions(properties.getLockSessions())
                    .connectionWaitTimeout(properties.getConnectionWaitTimeout())
                    .heartbeatInterval(properties.getHeartbeatInterval())
                    .fencingTokens(properties.getAdvisory().isFencingTokens())
                    .build();
            case LEASE -> PgLock.lease(dataSource)
                    .namespace(properties.getNamespace())
                    .tableName(properties.getTable().getName())
                    .initializeSchema(properties.getTable().getInitializeSchema() == PgLockProperties.InitializeSchema.ALWAYS)
                    .lease(properties.getLease())
                    .heartbeatInterval(properties.getHeartbeatInterval())
                    .lockSessions(properties.getLockSessions())
                    .connectionWaitTimeout(properties.getConnectionWaitTimeout())
                    .asyncReleaseCommit(properties.getTable().isAsyncReleaseCommit())
                    .build();
        };
    }

    @Override
    public void destroy() {
        closed = true;
        for (LockClient client : clients.values()) {
            try {
                client.close();
            } catch (RuntimeException e) {
                log.warn("closing the {} lock client failed", client.mode(), e);
            }
        }
        clients.clear();
    }
}
