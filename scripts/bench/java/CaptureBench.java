/*
 * Baselines for scripts/bench/capture.sh: Debezium's embedded engine in a plain JVM, the way
 * people usually embed it, with a consumer that throws every event away. They measure what
 * Debezium alone costs for a PostgreSQL initial snapshot, to compare db-sync's capture with.
 *
 *   json     DebeziumEngine.create(Json.class): key and value converted to JSON strings
 *            (with schemas, the default). Measures snapshot + JSON conversion.
 *   connect  DebeziumEngine.create(ChangeEventFormat.of(Connect.class)): SourceRecords, no
 *            conversion (the format db-sync's bridge uses). Measures snapshot alone.
 *
 * Usage: java -Xmx1g -cp 'debezium/lib/*:CLASSES' CaptureBench json|connect ENGINE.properties
 *
 * The consumer counts events, marks each processed and each batch finished (so offsets are
 * committed as a real consumer would), and stops at the snapshot's last record. Output, one
 * line on stdout: "events=N engine_seconds=S other=K" (N: change events of the table;
 * S: engine start to the last event, JVM start excluded, as the script times the whole
 * process itself; K: other records, e.g. heartbeats, in the same batches). Exit 0 on success.
 */
import io.debezium.embedded.Connect;
import io.debezium.engine.ChangeEvent;
import io.debezium.engine.DebeziumEngine;
import io.debezium.engine.RecordChangeEvent;
import io.debezium.engine.format.ChangeEventFormat;
import io.debezium.engine.format.Json;
import java.io.FileReader;
import java.io.Reader;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.atomic.AtomicReference;
import org.apache.kafka.connect.data.Struct;
import org.apache.kafka.connect.source.SourceRecord;

public final class CaptureBench {
  private static final CountDownLatch done = new CountDownLatch(1);
  private static final AtomicReference<String> failure = new AtomicReference<>();
  private static long events;
  private static long others;
  private static String tableTopic; // topic.prefix + "." + the one table in table.include.list
  private static long lastEventNanos;

  public static void main(String[] args) throws Exception {
    if (args.length != 2 || !(args[0].equals("json") || args[0].equals("connect"))) {
      System.err.println("usage: CaptureBench json|connect ENGINE.properties");
      System.exit(2);
    }
    Properties props = new Properties();
    try (Reader r = new FileReader(args[1])) {
      props.load(r);
    }

    tableTopic = props.getProperty("topic.prefix") + "." + props.getProperty("table.include.list");

    long start = System.nanoTime();
    DebeziumEngine<?> engine =
        args[0].equals("json")
            ? DebeziumEngine.create(Json.class)
                .using(props)
                .notifying(new JsonConsumer())
                .using(CaptureBench::completed)
                .build()
            : DebeziumEngine.create(ChangeEventFormat.of(Connect.class))
                .using(props)
                .notifying(new ConnectConsumer())
                .using(CaptureBench::completed)
                .build();
    ExecutorService executor = Executors.newSingleThreadExecutor();
    executor.execute(engine);
    done.await();
    engine.close();
    executor.shutdown();

    if (failure.get() != null) {
      System.err.println("error: " + failure.get());
      System.exit(1);
    }
    System.out.printf(
        "events=%d engine_seconds=%.3f other=%d%n", events, (lastEventNanos - start) / 1e9, others);
    System.exit(0);
  }

  /** The engine stopped: fine after the last snapshot record, a failure before it. */
  private static void completed(boolean success, String message, Throwable error) {
    if (lastEventNanos == 0) {
      failure.compareAndSet(
          null, "engine stopped before the snapshot ended: " + message + (error == null ? "" : " " + error));
    }
    done.countDown();
  }

  /**
   * Change events of the table are counted; other records the engine delivers around the
   * snapshot's end (heartbeats, the heartbeat action's logical message) are not.
   */
  private static void count(String topic) {
    if (!topic.equals(tableTopic)) {
      others++;
    } else {
      events++;
    }
  }

  private static void finished() {
    lastEventNanos = System.nanoTime();
    done.countDown();
  }

  /** JSON strings: only the batch's last value is searched (a snapshot fills whole batches). */
  private static final class JsonConsumer
      implements DebeziumEngine.ChangeConsumer<ChangeEvent<String, String>> {
    @Override
    public void handleBatch(
        List<ChangeEvent<String, String>> records,
        DebeziumEngine.RecordCommitter<ChangeEvent<String, String>> committer)
        throws InterruptedException {
      boolean last = false;
      for (ChangeEvent<String, String> r : records) {
        count(r.destination());
        committer.markProcessed(r);
      }
      if (!records.isEmpty()) {
        String v = records.get(records.size() - 1).value();
        last = v != null && v.contains("\"snapshot\":\"last\"");
        // A batch ending in a non-snapshot record (e.g. a heartbeat) may hold "last" earlier.
        if (!last && (v == null || v.contains("\"snapshot\":\"false\"") || !v.contains("\"snapshot\""))) {
          for (ChangeEvent<String, String> r : records) {
            last |= r.value() != null && r.value().contains("\"snapshot\":\"last\"");
          }
        }
      }
      committer.markBatchFinished();
      if (last) {
        finished();
      }
    }
  }

  /** SourceRecords: the source block's "snapshot" field, read on every record (cheap). */
  private static final class ConnectConsumer
      implements DebeziumEngine.ChangeConsumer<RecordChangeEvent<SourceRecord>> {
    @Override
    public void handleBatch(
        List<RecordChangeEvent<SourceRecord>> records,
        DebeziumEngine.RecordCommitter<RecordChangeEvent<SourceRecord>> committer)
        throws InterruptedException {
      boolean last = false;
      for (RecordChangeEvent<SourceRecord> r : records) {
        Object value = r.record().value();
        if (value instanceof Struct s && s.schema().field("source") != null) {
          last |= "last".equals(s.getStruct("source").getString("snapshot"));
        }
        count(r.record().topic());
        committer.markProcessed(r);
      }
      committer.markBatchFinished();
      if (last) {
        finished();
      }
    }
  }
}
