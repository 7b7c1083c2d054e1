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
    void remembersIdsWithoutMixingThemUp() {
        AdvisoryKeyHasher hasher = new AdvisoryKeyHasher("billing");
        String marker = dev.pglock.core.internal.PermitKeys.marker("pool", 5);
        long markerId = AdvisoryKeyHasher.lockId("billing", marker);
        for (int pass = 0; pass < 3; pass++) { // the first computes and remembers, the others look up
            assertThat(hasher.lockId("invoice:42")).isEqualTo(1572001551135567388L);
            assertThat(hasher.lockId("job")).isEqualTo(AdvisoryKeyHasher.lockId("billing", "job"));
            assertThat(hasher.lockId(marker)).isEqualTo(markerId);
        }
        // More keys than it remembers, twice: the ids stay right across the point where it forgets them all.
        java.util.List<String> keys = new java.util.ArrayList<>();
        for (int i = 0; i < AdvisoryKeyHasher.RECENT_KEYS * 3 / 2; i++) {
            keys.add("invoice:" + i);
        }
        for (int pass = 0; pass < 2; pass++) {
            for (String key : keys) {
                assertThat(hasher.lockId(key)).as(key).isEqualTo(AdvisoryKeyHasher.lockId("billing", key));
            }
        }
        assertThat(hasher.lockIdOnce("invoice:7")).isEqualTo(AdvisoryKeyHasher.lockId("billing", "invoice:7"));
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
