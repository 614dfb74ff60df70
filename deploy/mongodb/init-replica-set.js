// Initiates the replica set rs0 of deploy/compose (mongo-1..3) once: run by the mongo-init job
// with mongosh against mongo-1. Idempotent: a set that is already initiated is left alone.
try {
  rs.status();
  print("replica set rs0 already initiated");
} catch (e) {
  if (e.codeName !== "NotYetInitialized") throw e;
  rs.initiate({
    _id: "rs0",
    members: [
      { _id: 0, host: "mongo-1:27017", priority: 2 },
      { _id: 1, host: "mongo-2:27017", priority: 1 },
      { _id: 2, host: "mongo-3:27017", priority: 1 },
    ],
  });
  print("replica set rs0 initiated");
}
// Wait for a primary, so that services started after this job can write at once.
for (let i = 0; i < 120; i++) {
  if (db.hello().isWritablePrimary || db.hello().primary) break;
  sleep(1000);
}
if (!db.hello().primary) throw new Error("no primary after 120 s");
