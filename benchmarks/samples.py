"""Typical messages for the micro-benchmarks (what a softphone and Asterisk send)."""

INVITE = (
    b"INVITE sip:bob@example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-524287-1---5e4b1a1f8b5c;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b"Contact: <sip:alice@192.0.2.10:5060;transport=udp>\r\n"
    b"To: <sip:bob@example.com>\r\n"
    b'From: "Alice" <sip:alice@example.com>;tag=7a3c2f01\r\n'
    b"Call-ID: 9f8e7d6c5b4a39281706@192.0.2.10\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Allow: INVITE, ACK, CANCEL, BYE, NOTIFY, REFER, MESSAGE, OPTIONS, INFO, SUBSCRIBE\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Supported: replaces, norefersub, extended-refer, timer, outbound, path, X-cisco-serviceuri\r\n"
    b"User-Agent: Z 5.6.1 v2.10.20.1\r\n"
    b"Allow-Events: presence, kpml, talk, as-feature-event\r\n"
    b"Content-Length: 253\r\n"
    b"\r\n"
    b"v=0\r\n"
    b"o=Z 1700000000 1 IN IP4 192.0.2.10\r\n"
    b"s=Z\r\n"
    b"c=IN IP4 192.0.2.10\r\n"
    b"t=0 0\r\n"
    b"m=audio 8000 RTP/AVP 106 9 98 101 0 8 3\r\n"
    b"a=rtpmap:106 opus/48000/2\r\n"
    b"a=rtpmap:98 telephone-event/48000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
    b"a=sendrecv\r\n"
    b"a=ptime:20\r\n"
    b"a=fmtp:101 0-16\r\n"
)

REGISTER = (
    b"REGISTER sip:example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-524287-1---77aa11bb;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b'Contact: <sip:alice@192.0.2.10:5060;rinstance=8d2a5b1f;transport=udp>;+sip.instance="<urn:uuid:00000000-0000-1000-8000-000a95a0e128>";reg-id=1\r\n'
    b"To: <sip:alice@example.com>\r\n"
    b"From: <sip:alice@example.com>;tag=43a1b2c3\r\n"
    b"Call-ID: reg-5f4e3d2c1b0a@192.0.2.10\r\n"
    b"CSeq: 2 REGISTER\r\n"
    b"Expires: 60\r\n"
    b"Allow: INVITE, ACK, CANCEL, BYE, NOTIFY, REFER, MESSAGE, OPTIONS, INFO, SUBSCRIBE\r\n"
    b"Supported: replaces, outbound, path\r\n"
    b"User-Agent: Z 5.6.1 v2.10.20.1\r\n"
    b'Authorization: Digest username="alice",realm="example.com",nonce="1700000000.abcdef0123456789",uri="sip:example.com",response="0123456789abcdef0123456789abcdef",algorithm=MD5,cnonce="1a2b3c",qop=auth,nc=00000001\r\n'
    b"Content-Length: 0\r\n"
    b"\r\n"
)

OK_200 = (
    b"SIP/2.0 200 OK\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKep.1a2b3c4d.0;rport=5060\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-524287-1---5e4b1a1f8b5c;rport=5060;received=192.0.2.10\r\n"
    b"Record-Route: <sip:edge.example.com;lr>\r\n"
    b"Contact: <sip:bob@192.0.2.20:5060>\r\n"
    b"To: <sip:bob@example.com>;tag=as5f3e2d1c\r\n"
    b'From: "Alice" <sip:alice@example.com>;tag=7a3c2f01\r\n'
    b"Call-ID: 9f8e7d6c5b4a39281706@192.0.2.10\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Server: Asterisk PBX 20.5.0\r\n"
    b"Allow: INVITE, ACK, CANCEL, OPTIONS, BYE, REFER, SUBSCRIBE, NOTIFY, INFO, PUBLISH, MESSAGE\r\n"
    b"Supported: replaces, timer\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)
