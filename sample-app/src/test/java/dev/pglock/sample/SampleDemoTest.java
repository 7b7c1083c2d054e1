package dev.pglock.sample;

import static org.assertj.core.api.Assertions.assertThat;

import dev.pglock.test.PgTestDatabase;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/**
 * Runs the README's first command (the demo, through main's own path) briefly against the real
 * database: replica processes, a kill -9 midway, the table and the timeline page, which headless
 * Chromium then renders.
 */
class SampleDemoTest {

    private static final Path HTML = Path.of("target", "pglock-demo.html");
    private static int code;
    private static String table;

    @BeforeAll
    static void runTheDemo() throws IOException {
        Files.deleteIfExists(HTML);
        PgTestDatabase db = PgTestDatabase.get();
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        ByteArrayOutputStream err = new ByteArrayOutputStream();
        code = SampleApplication.run(new String[] {"--demo", "--demo.replicas=2", "--demo.seconds=10",
            "--demo.invoices=12", "--demo.html=" + HTML, "--spring.datasource.url=" + db.jdbcUrl(),
            "--spring.datasource.username=" + db.user(), "--spring.datasource.password=" + db.password()},
                print(out), print(err));
        table = out.toString(StandardCharsets.UTF_8) + err.toString(StandardCharsets.UTF_8);
    }

    @Test
    void theDemoKillsTheJobsHolderAndFindsExclusivityAndThePromisedTakeoverInBothModes() {
        assertThat(code).as(table).isZero();
        assertThat(table).contains("mode advisory: 2 replica processes", "mode lease: 2 replica processes")
                .contains("invoices paid .............. 12 of 12")
                .contains("double payments ............ 0 ")
                .contains("Exclusivity held in both modes, and the crashed replica's lock ended as each mode promises.");
        assertThat(table.split("verdict .................... exclusive\n", -1)).hasSize(3);
        List<Long> freed = new ArrayList<>();
        Matcher m = Pattern.compile("killed; its lock ended after (\\d+) ms").matcher(table);
        while (m.find()) {
            freed.add(Long.parseLong(m.group(1)));
        }
        assertThat(freed).as(table).hasSize(2);
        assertThat(freed.get(0)).as("advisory: the dead replica's session ends at once").isLessThanOrEqualTo(
                Demo.HEARTBEAT_MILLIS);
        assertThat(freed.get(1)).as("lease: within lease + one heartbeat").isLessThanOrEqualTo(
                Demo.LEASE_MILLIS + Demo.HEARTBEAT_MILLIS);
        assertThat(table).contains("The timeline: " + HTML.toAbsolutePath());
    }

    /** Debian's chromium (.ci/run installs it) opens the page; the page draws each lane and the crash itself. */
    @Test
    void theTimelinePageRendersEveryLaneAndTheCrashInHeadlessChromium() throws Exception {
        assertThat(HTML).exists();
        Path chromium = List.of("/usr/bin/chromium", "/usr/bin/chromium-browser").stream().map(Path::of)
                .filter(Files::isExecutable).findFirst().orElse(null);
        assertThat(chromium).as("Debian's chromium is needed for this test: apt-get install chromium (.ci/run"
                + " installs it)").isNotNull();
        String url = HTML.toAbsolutePath().toUri().toString();
        String dom = chromium(chromium, "--dump-dom", url);
        assertThat(dom).contains("data-rendered=\"2\"");
        assertThat(dom).contains("data-mode=\"advisory\"", "data-mode=\"lease\"");
        for (String lane : List.of("replica-1", "replica-2", "replica-3")) { // two, and the replacement
            assertThat(count(dom, "data-lane=\"" + lane + "\"")).as(lane + " in both modes").isEqualTo(2);
        }
        assertThat(count(dom, "class=\"crash\"")).as("the kill, once per mode").isEqualTo(2);
        assertThat(count(dom, "class=\"bar job\"")).isPositive();
        assertThat(count(dom, "class=\"bar invoice\"")).isPositive();
        assertThat(count(dom, "class=\"bar dead\"")).as("the dead replica's lock, once per mode").isEqualTo(2);

        Path screenshot = Path.of("target", "pglock-demo.png").toAbsolutePath();
        Files.deleteIfExists(screenshot);
        chromium(chromium, "--screenshot=" + screenshot, "--window-size=1300,1000", url);
        assertThat(screenshot).exists();
        assertThat(Files.size(screenshot)).as("a picture, not a blank page").isGreaterThan(20_000);
    }

    /** Runs headless Chromium on a profile of its own; its output goes to a file, so a lingering helper cannot block. */
    private static String chromium(Path chromium, String... args) throws Exception {
        Path profile = Files.createDirectories(Path.of("target", "chromium-profile")).toAbsolutePath();
        Path output = Files.createTempFile("pglock-chromium", ".out");
        List<String> command = new ArrayList<>(List.of(chromium.toString(), "--headless", "--no-sandbox",
                "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars", "--user-data-dir=" + profile));
        command.addAll(List.of(args));
        Process process = new ProcessBuilder(command).redirectOutput(output.toFile())
                .redirectError(ProcessBuilder.Redirect.DISCARD).start();
        try {
            assertThat(process.waitFor(60, TimeUnit.SECONDS)).as("chromium finished within 60 s").isTrue();
            assertThat(process.exitValue()).as("chromium's exit code").isZero();
            return Files.readString(output, StandardCharsets.UTF_8);
        } finally {
            process.descendants().forEach(ProcessHandle::destroyForcibly);
            process.destroyForcibly();
            Files.deleteIfExists(output);
        }
    }

    private static int count(String text, String part) {
        int n = 0;
        for (int at = text.indexOf(part); at >= 0; at = text.indexOf(part, at + part.length())) {
            n++;
        }
        return n;
    }

    @Test
    void anUnreachableDatabaseIsOneParagraphAndExitCodeTwo() {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        ByteArrayOutputStream err = new ByteArrayOutputStream();

        int exit = SampleApplication.run(new String[] {"--demo",
            "--spring.datasource.url=jdbc:postgresql://127.0.0.1:1/nowhere"}, print(out), print(err));

        assertThat(exit).isEqualTo(2);
        String message = err.toString(StandardCharsets.UTF_8);
        assertThat(message).contains("cannot reach the PostgreSQL you named", "127.0.0.1:1/nowhere",
                "SPRING_DATASOURCE_USERNAME").doesNotContain("\tat ");
        assertThat(out.toString(StandardCharsets.UTF_8)).isEmpty();
    }

    private static PrintStream print(ByteArrayOutputStream target) {
        return new PrintStream(target, true, StandardCharsets.UTF_8);
    }
}
