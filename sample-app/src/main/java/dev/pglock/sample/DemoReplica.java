package dev.pglock.sample;

import dev.pglock.core.LockNotAcquiredException;
import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ThreadLocalRandom;
import org.springframework.boot.WebApplicationType;
import org.springframework.boot.builder.SpringApplicationBuilder;
import org.springframework.context.ConfigurableApplicationContext;

/**
 * One replica of the demo, in a process of its own ({@code --demo.replica=NAME}, started by
 * {@link Demo}): the sample application with its own lock client and pool, its scheduled job
 * ticking, and two driver threads. One pays the run's invoices, paced over the run so that the
 * timeline shows the locks move (every replica asks for each invoice at about the same moment),
 * then sweeps for any left unpaid (a replica killed mid-payment rolls its payment back); the other
 * reads the shared report and now and then rebuilds it.
 *
 * <p>It talks to the demo over its standard streams: it prints {@code READY} once its context runs,
 * starts its work when it reads {@code GO <start> <pay-until>} (epoch milliseconds, the same for
 * every replica), and closes its context gracefully when its input ends: when the demo stops it, and
 * when the demo itself dies, so that no replica outlives it. A {@code kill -9} ends it at once.
 */
final class DemoReplica {

    private DemoReplica() {
    }

    /** Runs until its input ends; returns the exit code. */
    static int run(Map<String, Object> database, String[] args, PrintStream out) {
        String replica = Demo.stringArg(args, "--demo.replica=", null);
        String mode = Demo.stringArg(args, "--demo.mode=", "advisory");
        String runId = Demo.stringArg(args, "--demo.run=", "demo");
        int invoices = Demo.intArg(args, "--demo.invoices=", 40);
        ConfigurableApplicationContext context = new SpringApplicationBuilder(SampleApplication.class)
                .profiles(mode, "demo").web(WebApplicationType.NONE).logStartupInfo(false).properties(database)
                // As command-line arguments: they must win over application.yml (default properties would not).
                .run(java.util.stream.Stream.concat(Arrays.stream(Demo.passOn(args)),
                        Arrays.stream(Demo.replicaProperties(replica, runId, mode)).map(p -> "--" + p))
                        .toArray(String[]::new));
        Invoices payments = context.getBean(Invoices.class);
        Reports reports = context.getBean(Reports.class);
        out.println("READY " + replica + " " + ProcessHandle.current().pid());
        out.flush();
        List<Thread> drivers = new ArrayList<>();
        try (BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8))) {
            for (String line; (line = in.readLine()) != null; ) {
                String[] go = line.trim().split(" ");
                if (go.length == 3 && go[0].equals("GO") && drivers.isEmpty()) {
                    long startAt = Long.parseLong(go[1]);
                    long payUntil = Long.parseLong(go[2]);
                    drivers.add(new Thread(() -> payPaced(payments, invoices, startAt, payUntil), "demo-pay"));
                    drivers.add(new Thread(() -> readAndRebuild(reports, startAt), "demo-report"));
                    drivers.forEach(Thread::start);
                }
            }
        } catch (IOException | NumberFormatException e) {
            // the demo's end of the pipe is gone: stop as if told to
        }
        drivers.forEach(Thread::interrupt);
        context.close(); // graceful: waits for locked work, then releases every lock
        return 0;
    }

    /** Invoice k is asked for at startAt + k * spacing by every replica; then any still unpaid. */
    private static void payPaced(Invoices invoices, int count, long startAt, long payUntil) {
        long spacing = Math.max(1, (payUntil - startAt) / Math.max(1, count));
        try {
            for (int k = 0; k < count; k++) {
                long at = startAt + k * spacing;
                long now = System.currentTimeMillis();
                if (now > at + spacing) {
                    continue; // a replacement started late: its slot has passed, the sweep below catches up
                }
                if (at > now) {
                    Thread.sleep(at - now);
                }
                tryPay(invoices, k + 1);
            }
            for (int k = 0; k < count; k++) {
                tryPay(invoices, k + 1); // paid already: a read under the lock, and no payment
            }
        } catch (InterruptedException | RuntimeException stopping) {
            // the process is ending
        }
    }

    private static void tryPay(Invoices invoices, long id) {
        try {
            invoices.pay(id);
        } catch (LockNotAcquiredException busy) {
            // another replica kept the invoice's lock for the whole wait: the sweep tries again
        }
    }

    /** Reads the report (shared) and rebuilds it (exclusive) about once in four, a few times a second. */
    private static void readAndRebuild(Reports reports, long startAt) {
        try {
            long wait = startAt - System.currentTimeMillis();
            if (wait > 0) {
                Thread.sleep(wait);
            }
            while (!Thread.currentThread().isInterrupted()) {
                try {
                    if (ThreadLocalRandom.current().nextInt(4) == 0) {
                        reports.rebuild();
                    } else {
                        reports.read();
                    }
                } catch (LockNotAcquiredException busy) {
                    // a long queue for the report: counted by what was recorded
                }
                Thread.sleep(ThreadLocalRandom.current().nextInt(150, 400));
            }
        } catch (InterruptedException | RuntimeException stopping) {
            // the process is ending
        }
    }
}
