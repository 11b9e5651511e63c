use super::*;
use crate::platform::memory::pair;
use std::sync::mpsc;

/// Takes packets whose first byte is odd and answers each with a copy whose second byte is 0xEE.
struct OddEcho;
impl Intercept for OddEcho {
  fn process(&self, batch: &mut Batch, to_device: &mut Batch) {
    batch.retain_mut(|p| {
      if p[0] % 2 == 1 {
        let mut r = p.to_vec();
        r[1] = 0xEE;
        to_device.push(&r);
        false
      } else {
        true
      }
    });
  }
}

#[test]
fn retain_mut_compacts_in_order() {
  let mut b = Batch::default();
  for i in 0..10u8 {
    b.push(&vec![i; 1 + i as usize]);
  }
  let dropped = b.retain_mut(|p| {
    p[0] += 100;
    p.len() % 3 != 0
  });
  assert_eq!(dropped, 3);
  let got: Vec<Vec<u8>> = b.iter().map(|p| p.to_vec()).collect();
  let want: Vec<Vec<u8>> = (0..10u8)
    .filter(|i| (1 + *i as usize) % 3 != 0)
    .map(|i| {
      let mut p = vec![i; 1 + i as usize];
      p[0] += 100;
      p
    })
    .collect();
  assert_eq!(got, want);
  assert_eq!(b.data.len(), want.iter().map(|p| p.len()).sum::<usize>());
}

#[test]
fn an_intercept_takes_and_answers_packets_on_the_reader_thread() {
  let (a, b) = pair(1500, 1024).unwrap();
  let start = |q: Box<dyn Queue>| {
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    let notify = Box::new(move |e| {
      let _ = lock(&tx).send(e);
    });
    (PacketRing::start(q, RingConfig::default(), notify).unwrap(), rx)
  };
  let (ra, ea) = start(a.queues.into_iter().next().unwrap());
  let (rb, eb) = start(b.queues.into_iter().next().unwrap());
  rb.set_intercept(Some(Arc::new(OddEcho)));
  let pkts: Vec<Vec<u8>> = (0..100u8).map(|i| vec![i, 0, 1, 2]).collect();
  let refs: Vec<&[u8]> = pkts.iter().map(|p| p.as_slice()).collect();
  ra.send(&refs, 400).unwrap();
  // b's consumer sees only the even ones; a gets the odd ones back, answered.
  let collect = |r: &PacketRing, ev: &mpsc::Receiver<RingEvent>, want: usize| {
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while out.len() < want && Instant::now() < deadline {
      match r.pull() {
        Pull::Batch(slab, lens) => {
          let mut off = 0;
          for l in lens {
            out.push(slab.data()[off..off + l as usize].to_vec());
            off += l as usize;
          }
        }
        _ => {
          let _ = ev.recv_timeout(Duration::from_millis(50));
        }
      }
    }
    out
  };
  let seen = collect(&rb, &eb, 50);
  assert_eq!(
    seen,
    (0..100u8)
      .filter(|i| i % 2 == 0)
      .map(|i| vec![i, 0, 1, 2])
      .collect::<Vec<_>>()
  );
  let answers = collect(&ra, &ea, 50);
  assert_eq!(
    answers,
    (0..100u8)
      .filter(|i| i % 2 == 1)
      .map(|i| vec![i, 0xEE, 1, 2])
      .collect::<Vec<_>>()
  );
  ra.close();
  rb.close();
}
