package dev.pglock.faults;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import dev.pglock.core.HeldLock;
import dev.pglock.core.LockClient;
import dev.pglock.core.LockDatabaseException;
import dev.pglock.core.LockRequest;
import dev.pglock.core.PgLock;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.ResultSet;
import java.sql.Statement;
import org.junit.jupiter.api.Test;
import org.postgresql.ds.PGSimpleDataSource;

/**
 * Advisory locks taken on a hot standby are the standby's own: PostgreSQL grants them there (they
 * are not written to the WAL) and they do not conflict with the primary's. A client whose pool
 * reaches a standby (a multi-host URL after a failover, with pgjdbc's default targetServerType=any)
 * must take no lock there, or two replicas would both hold one key. Before, it took it.
 */
class StandbyIT {

    @Test
    void anAdvisoryClientTakesNoLockOnAStandby() throws Exception {
        try (Clusters clusters = Clusters.create(line -> { })) {
            try (LockClient onPrimary = PgLock.advisory(dataSource(clusters.primaryUrl())).namespace("standby").build()) {
                HeldLock held = onPrimary.acquire(LockRequest.of("k"));

                assertThatThrownBy(() -> PgLock.advisory(dataSource(clusters.standbyUrl())).namespace("standby").build())
                        .isInstanceOf(LockDatabaseException.class).hasMessageContaining("standby")
                        .hasMessageContaining("targetServerType=primary");
                try (Connection c = DriverManager.getConnection(clusters.standbyUrl(), "postgres", "");
                        Statement st = c.createStatement();
                        ResultSet rs = st.executeQuery("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")) {
                    rs.next();
                    assertThat(rs.getLong(1)).as("no advisory lock on the standby").isZero();
                }
                // A transaction lock runs on the caller's own connection, which may be the standby's.
                for (LockRequest request : java.util.List.of(LockRequest.of("k"),
                        LockRequest.of("k").waitAtMost(java.time.Duration.ofSeconds(1)))) {
                    try (Connection tx = DriverManager.getConnection(clusters.standbyUrl(), "postgres", "")) {
                        tx.setAutoCommit(false);
                        assertThatThrownBy(() -> onPrimary.tryAcquireInTransaction(tx, request))
                                .isInstanceOf(LockDatabaseException.class).hasMessageContaining("standby");
                        try (Statement st = tx.createStatement();
                                ResultSet rs = st.executeQuery("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")) {
                            rs.next();
                            assertThat(rs.getLong(1)).as("no advisory lock in the standby's transaction").isZero();
                        }
                        tx.rollback();
                    }
                }
                held.release();
            }
        }
    }

    private static PGSimpleDataSource dataSource(String url) {
        PGSimpleDataSource ds = new PGSimpleDataSource();
        ds.setUrl(url);
        ds.setUser("postgres");
        return ds;
    }
}
