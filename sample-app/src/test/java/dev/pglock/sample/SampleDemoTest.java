package dev.pglock.sample;

import static org.assertj.core.api.Assertions.assertThat;

import dev.pglock.test.PgTestDatabase;
import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.util.Map;
import org.junit.jupiter.api.Test;

/** Runs the README's first command (the demo) briefly against the real database and checks its verdict. */
class SampleDemoTest {

    @Test
    void theDemoFindsExclusivityInBothModes() {
        PgTestDatabase db = PgTestDatabase.get();
        Map<String, Object> database = Map.of("spring.datasource.url", db.jdbcUrl(),
                "spring.datasource.username", db.user(), "spring.datasource.password", db.password());
        ByteArrayOutputStream printed = new ByteArrayOutputStream();

        boolean exclusive = Demo.run(database, new String[] {"--demo.replicas=2", "--demo.seconds=3",
                "--demo.invoices=12"}, new PrintStream(printed, true, StandardCharsets.UTF_8));

        String table = printed.toString(StandardCharsets.UTF_8);
        assertThat(exclusive).as(table).isTrue();
        assertThat(table).contains("mode advisory: 2 replicas", "mode lease: 2 replicas")
                .contains("invoices paid .............. 12 of 12")
                .contains("double payments ............ 0 ")
                .contains("runs per tick (max) ........ 1 ")
                .contains("Exclusivity held in both modes.");
        assertThat(table.split("verdict .................... exclusive", -1)).hasSize(3);
    }
}
