package dev.pglock.faults;

import java.sql.Connection;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import javax.sql.DataSource;

/**
 * The common clock of a run: the resource server's {@code clock_timestamp()} in microseconds. A
 * process measures once how far its monotonic clock is from it (the best of a few round trips, the
 * answer taken at the middle of the round trip) and converts its own times with that offset.
 */
final class Clock {

    static final String NOW_MICROS = "SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint";

    private Clock() {
    }

    /** Server micros minus local {@code nanoTime / 1000}, from the round trip with the shortest time. */
    static long offsetMicros(DataSource dataSource) throws SQLException {
        try (Connection c = dataSource.getConnection(); Statement st = c.createStatement()) {
            long best = Long.MAX_VALUE;
            long offset = 0;
            for (int i = 0; i < 7; i++) {
                long before = System.nanoTime();
                long server;
                try (ResultSet rs = st.executeQuery(NOW_MICROS)) {
                    rs.next();
                    server = rs.getLong(1);
                }
                long after = System.nanoTime();
                if (after - before < best) {
                    best = after - before;
                    offset = server - (before + after) / 2 / 1000;
                }
            }
            return offset;
        }
    }
}
