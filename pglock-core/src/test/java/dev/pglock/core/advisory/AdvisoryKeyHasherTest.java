package dev.pglock.core.advisory;

import static org.assertj.core.api.Assertions.assertThat;

import dev.pglock.test.PgTestDatabase;
import java.sql.Connection;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.util.Map;
import org.junit.jupiter.api.Test;

class AdvisoryKeyHasherTest {

    /**
     * Golden values: these ids are in production databases' pg_locks. If this test fails, the hash
     * changed and two versions of an application would no longer exclude each other. Do not update
     * the numbers; restore the function. They were computed by PostgreSQL with AdvisoryKeyHasher.SQL.
     */
    private static final Map<String[], Long> GOLDEN = Map.of(
            new String[] {"", "job"}, 705449495532907756L,
            new String[] {"billing", "invoice:42"}, 1572001551135567388L,
            new String[] {"billing", "Überweisung-€"}, -4791647372612277444L,
            new String[] {"", ""}, 7940984811893783192L);

    @Test
    void idsNeverChange() {
        GOLDEN.forEach((input, id) -> assertThat(AdvisoryKeyHasher.lockId(input[0], input[1]))
                .as(input[0] + "/" + input[1]).isEqualTo(id));
    }

    @Test
    void remembersIdsWithoutMixingThemUpAcrossManyKeysAndMarkers() {
        AdvisoryKeyHasher hasher = new AdvisoryKeyHasher("billing");
        java.util.List<String> keys = new java.util.ArrayList<>();
        for (int i = 0; i < AdvisoryKeyHasher.RECENT_KEYS * 3; i++) {
            keys.add("invoice:" + i);
        }
        keys.add(dev.pglock.core.internal.PermitKeys.marker("pool", 5));
        for (int pass = 0; pass < 2; pass++) { // the second pass finds some ids remembered, some forgotten
            for (String key : keys) {
                assertThat(hasher.lockId(key)).as(key).isEqualTo(AdvisoryKeyHasher.lockId("billing", key));
            }
        }
        assertThat(hasher.lockId("invoice:1")).isNotEqualTo(hasher.lockId("invoice:2"));
    }

    @Test
    void theNamespaceSeparatesKeys() {
        assertThat(AdvisoryKeyHasher.lockId("a", "bc")).isNotEqualTo(AdvisoryKeyHasher.lockId("ab", "c"));
        assertThat(AdvisoryKeyHasher.lockId("billing", "job")).isNotEqualTo(AdvisoryKeyHasher.lockId("", "job"));
    }

    @Test
    void postgresComputesTheSameIdWithTheDocumentedSql() throws Exception {
        try (Connection c = PgTestDatabase.get().connect();
                PreparedStatement ps = c.prepareStatement(AdvisoryKeyHasher.SQL)) {
            for (String[] input : GOLDEN.keySet()) {
                ps.setString(1, input[0]);
                ps.setString(2, input[1]);
                try (ResultSet rs = ps.executeQuery()) {
                    rs.next();
                    assertThat(rs.getLong(1)).as(input[0] + "/" + input[1])
                            .isEqualTo(AdvisoryKeyHasher.lockId(input[0], input[1]));
                }
            }
        }
    }
}
