package dev.pglock.spring.boot.autoconfigure;

import dev.pglock.core.LockClient;
import dev.pglock.core.LockMode;
import dev.pglock.core.PgLock;
import java.util.EnumMap;
import java.util.Map;
import javax.sql.DataSource;
import org.springframework.beans.factory.DisposableBean;

/**
 * The lock clients of the application, one per mode, built from {@code pglock.*} when first needed:
 * the configured mode's at start-up, the other only if a {@code @DistributedLock(mode = ...)} or
 * {@code LockTemplate.inMode(...)} asks for it. Closes them when the context closes.
 */
public class PgLockClients implements DisposableBean {

    private final PgLockProperties properties;
    private final DataSource dataSource;
    private final Map<LockMode, LockClient> clients = new EnumMap<>(LockMode.class);

    public PgLockClients(PgLockProperties properties, DataSource dataSource) {
        this.properties = properties;
        this.dataSource = dataSource;
    }

    /** The client for {@code mode}, built on first use. */
    public synchronized LockClient get(LockMode mode) {
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
                    .build();
        };
    }

    @Override
    public synchronized void destroy() {
        clients.values().forEach(LockClient::close);
        clients.clear();
    }
}
