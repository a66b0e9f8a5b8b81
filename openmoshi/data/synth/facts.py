"""The word lists behind the synthetic conversations: facts for the question families and the lines of small
talk. Plain data, no logic (content.py and script.py use it). Everything is written out in words, with
punctuation only at the ends of phrases, so that every synthesiser reads the same words."""

from __future__ import annotations

COLOURS: tuple[tuple[str, str], ...] = (
    ("a banana", "yellow"), ("the sky", "blue"), ("grass", "green"), ("snow", "white"), ("coal", "black"),
    ("a strawberry", "red"), ("a lemon", "yellow"), ("an orange", "orange"), ("a tomato", "red"),
    ("milk", "white"), ("the sun", "yellow"), ("a carrot", "orange"), ("a lime", "green"), ("chocolate", "brown"),
    ("a frog", "green"), ("a crow", "black"), ("a polar bear", "white"), ("a fire truck", "red"),
    ("the sea", "blue"), ("a pumpkin", "orange"), ("an elephant", "grey"), ("a cucumber", "green"),
    ("a cherry", "red"), ("a flamingo", "pink"), ("a blueberry", "blue"), ("an eggplant", "purple"),
    ("a lettuce", "green"), ("a raven", "black"), ("a swan", "white"), ("a mouse", "grey"), ("coffee", "brown"),
    ("a ruby", "red"), ("an emerald", "green"), ("a sapphire", "blue"), ("gold", "yellow"), ("a pea", "green"),
    ("a plum", "purple"), ("a tiger", "orange"), ("a zebra", "black and white"), ("a panda", "black and white"),
    ("a school bus", "yellow"), ("a lobster", "red"), ("salt", "white"), ("a leaf in summer", "green"),
    ("a chick", "yellow"), ("a cloud", "white"), ("a penguin", "black and white"), ("a rose", "red"),
)

OPPOSITES: tuple[tuple[str, str], ...] = (
    ("hot", "cold"), ("big", "small"), ("up", "down"), ("left", "right"), ("fast", "slow"), ("old", "young"),
    ("happy", "sad"), ("light", "dark"), ("open", "closed"), ("early", "late"), ("full", "empty"),
    ("wet", "dry"), ("tall", "short"), ("day", "night"), ("high", "low"), ("hard", "soft"), ("loud", "quiet"),
    ("rich", "poor"), ("thick", "thin"), ("strong", "weak"), ("clean", "dirty"), ("inside", "outside"),
    ("push", "pull"), ("win", "lose"), ("buy", "sell"), ("first", "last"), ("love", "hate"), ("near", "far"),
    ("heavy", "light"), ("true", "false"), ("north", "south"), ("east", "west"), ("black", "white"),
    ("always", "never"), ("laugh", "cry"), ("sweet", "sour"), ("wide", "narrow"), ("asleep", "awake"),
    ("begin", "end"), ("yes", "no"), ("good", "bad"), ("easy", "difficult"), ("before", "after"),
)

SPELL_WORDS: tuple[str, ...] = tuple("""cat dog sun hat red car bed cup box pen map bus egg fish milk tree book
door ball bird cake rain star moon ship frog lamp hand duck sock kite home blue cold nose ring road coat bell
corn desk fork gift goat king lion nest pink rock rose salt seed sing song tent wind wolf yard zoo""".split())

REPEAT_WORDS: tuple[str, ...] = tuple("""banana window elephant yellow pencil garden rabbit orange mountain river
chocolate butterfly computer umbrella tomato kitchen sunshine pillow blanket bicycle basket candle carpet
dinosaur dolphin feather guitar hammer island jacket ladder lemon mirror monkey necklace ocean painter parrot
pepper pocket puzzle rainbow robot sandwich scissors shadow spider sugar teacher thunder tiger turtle violin
wagon walrus whistle winter wizard zipper apple bottle button camera""".split())

DAYS: tuple[str, ...] = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MONTHS: tuple[str, ...] = ("January", "February", "March", "April", "May", "June", "July", "August",
                           "September", "October", "November", "December")

# (question, the answer is yes, a short reason that follows "Yes," or "No,")
YES_NO: tuple[tuple[str, bool, str], ...] = (
    ("Is the sun hot?", True, "it is very hot."), ("Is snow cold?", True, "snow is cold."),
    ("Can fish swim?", True, "fish can swim."), ("Can dogs fly?", False, "dogs cannot fly."),
    ("Is the sky green?", False, "the sky is blue."), ("Do cats bark?", False, "cats meow."),
    ("Is ice cold?", True, "ice is cold."), ("Do birds have wings?", True, "birds have wings."),
    ("Is a week seven days long?", True, "a week has seven days."), ("Is water dry?", False, "water is wet."),
    ("Do cows give milk?", True, "cows give milk."), ("Is a mouse bigger than an elephant?", False,
                                                        "an elephant is much bigger."),
    ("Can people breathe under water?", False, "people need air."), ("Is the moon in the sky at night?", True,
                                                                      "you can often see it at night."),
    ("Do plants need water?", True, "plants need water to grow."), ("Is fire cold?", False, "fire is hot."),
    ("Is a year twelve months long?", True, "a year has twelve months."), ("Do snakes have legs?", False,
                                                                            "snakes have no legs."),
    ("Is a tomato blue?", False, "a tomato is red."), ("Can a horse run?", True, "horses run fast."),
    ("Is January the first month of the year?", True, "January comes first."),
    ("Is Sunday a day of the week?", True, "Sunday is a day of the week."),
    ("Is December in the summer everywhere?", False, "it depends on where you live."),
    ("Do spiders have eight legs?", True, "spiders have eight legs."), ("Is a car an animal?", False,
                                                                        "a car is a machine."),
    ("Can you eat a rock?", False, "rocks are not food."), ("Do bees make honey?", True, "bees make honey."),
    ("Is the ocean salty?", True, "sea water is salty."), ("Is a circle square?", False, "a circle is round."),
    ("Is two bigger than five?", False, "five is bigger."), ("Is ten more than three?", True,
                                                              "ten is more than three."),
    ("Do we sleep at night?", True, "most people sleep at night."), ("Is a banana a fruit?", True,
                                                                      "a banana is a fruit."),
    ("Is a carrot a fruit?", False, "a carrot is a vegetable."), ("Can penguins fly?", False,
                                                                  "penguins swim instead."),
    ("Do trees have leaves?", True, "most trees have leaves."), ("Is the earth flat?", False,
                                                                  "the earth is round."),
    ("Does a triangle have three sides?", True, "a triangle has three sides."),
    ("Does a square have five sides?", False, "a square has four sides."),
    ("Is milk white?", True, "milk is white."), ("Is grass purple?", False, "grass is green."),
    ("Do ducks quack?", True, "ducks quack."), ("Is Monday after Tuesday?", False, "Monday comes before Tuesday."),
    ("Is Friday before Saturday?", True, "Friday comes just before Saturday."),
    ("Is summer usually warm?", True, "summer is usually warm."), ("Is winter usually hot?", False,
                                                                    "winter is usually cold."),
    ("Can a baby drive a car?", False, "babies cannot drive."), ("Is one plus one two?", True,
                                                                  "one plus one is two."),
    ("Is three plus three seven?", False, "three plus three is six."), ("Do fish live in water?", True,
                                                                         "fish live in water."),
)

# ---- small talk (same in both splits: only the question instances are held out) ----------------------------

MOSHI_GREETINGS = ("Hello! How can I help you today?", "Hi there! What can I do for you?", "Hey! How are you?",
                   "Hello, I'm Moshi. What would you like to talk about?", "Hi! Nice to hear from you.",
                   "Good to hear you. What's on your mind?", "Hello there! Ask me anything.")
USER_GREETINGS = ("Hello.", "Hi.", "Hey there.", "Hi Moshi.", "Hello Moshi.", "Good morning.", "Hey, hi.",
                  "Good afternoon.", "Hi, how are you?", "Hello there.")
MOSHI_GREETING_REPLIES = ("Hi! What can I do for you?", "Hello! How can I help?", "Hey! Good to hear you.",
                          "Hi there. What's up?", "Hello! What would you like to know?")
USER_GOODBYES = ("Okay, thanks. Bye.", "Thank you, goodbye.", "That's all, bye bye.", "Great, thanks a lot. Bye.",
                 "Alright, see you later.", "Thanks, that was helpful. Goodbye.", "Okay, bye now.",
                 "I have to go now. Bye.")
MOSHI_GOODBYES = ("Goodbye! Have a nice day.", "Bye! Talk to you soon.", "You're welcome. Bye!",
                  "See you later!", "Take care. Goodbye!", "Bye bye!")
USER_THANKS = ("Thanks.", "Thank you.", "Okay.", "Great.", "Cool, thanks.", "Right, thanks.", "Oh, okay.",
               "Nice.", "Got it.")
MOSHI_WELCOME = ("You're welcome.", "No problem.", "Sure thing.", "Anytime.", "Happy to help.")
BACKCHANNELS_USER = ("Uh-huh.", "Right.", "Okay.", "Yeah.", "I see.", "Oh.", "Sure.", "Hmm.", "Yes.")
BACKCHANNELS_MOSHI = ("Uh-huh.", "Right.", "Okay.", "Yeah.", "I see.", "Oh.", "Sure.")
NEXT_QUESTION = ("", "", "", "Another one. ", "Okay, next. ", "And now, ", "Let me ask you something. ",
                 "One more. ", "Now, ", "Alright. ")
INTERRUPTIONS = ("Sorry, wait. ", "Hold on. ", "Wait, wait. ", "Sorry to interrupt. ", "Actually, ",
                 "Okay, stop. ", "Sorry. ", "")

# (the user's line, Moshi's possible replies)
SMALL_TALK: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("How are you today?", ("I'm doing well, thank you. How about you?", "Pretty good, thanks for asking.")),
    ("What's your name?", ("My name is Moshi.", "I'm Moshi.", "You can call me Moshi.")),
    ("Who are you?", ("I'm Moshi, a small voice assistant.", "I'm Moshi. I like to chat and answer questions.")),
    ("What can you do?", ("I can chat with you and answer simple questions.",
                          "I can answer easy questions, do small sums, and spell words.")),
    ("I'm a bit tired today.", ("Oh, I'm sorry to hear that. Maybe you need some rest.",
                                "That happens. I hope you can rest soon.")),
    ("It's raining here.", ("Oh, rainy days are good for staying inside.", "I hope you have an umbrella.")),
    ("It's a sunny day.", ("That sounds lovely. Enjoy the sunshine.", "Nice! A good day for a walk.")),
    ("I just had lunch.", ("Nice. I hope it was tasty.", "Good. Was it something nice?")),
    ("I like music.", ("Me too. Music is wonderful.", "That's great. What kind of music do you like?")),
    ("Do you like cats?", ("I do. Cats are very cute.", "Yes, cats are lovely.")),
    ("Are you a robot?", ("I'm a computer program, yes.", "Sort of. I'm a small model that talks.")),
    ("I'm learning to cook.", ("That's great. Cooking is a useful skill.", "Nice. Start with something simple.")),
    ("Can you hear me?", ("Yes, I can hear you well.", "Yes, loud and clear.")),
    ("I'm good, thanks.", ("Glad to hear it.", "Great.")),
    ("Not bad.", ("Good to hear.", "Okay, good.")),
    ("Let's play a game.", ("Sure. Ask me a question and I'll answer it.", "Okay. You ask, I answer.")),
    ("I have a question.", ("Sure, go ahead.", "Of course. What is it?", "Yes? I'm listening.")),
    ("Can I ask you something?", ("Of course. Go ahead.", "Sure, ask away.")),
)

# long answers that the user may cut short (the user's line, Moshi's several sentences)
LONG_TALK: tuple[tuple[str, str], ...] = (
    ("Tell me about the ocean.", "The ocean covers most of our planet. It is very deep in places, and many "
     "animals live there, from tiny fish to huge whales. The water is salty, and it moves with the tides."),
    ("Tell me about cats.", "Cats are small animals that many people keep at home. They like to sleep a lot, "
     "sometimes more than twelve hours a day. They are good at climbing and they love to play."),
    ("What do you like to do?", "I like talking with people and answering questions. I enjoy simple puzzles, "
     "like small sums and spelling words. And I always like to hear how your day is going."),
    ("Tell me about the weather.", "The weather changes with the seasons. In summer it is usually warm and "
     "sunny, and in winter it can be cold, with rain or even snow. Spring and autumn are somewhere in between."),
    ("Tell me a story.", "Once upon a time there was a little rabbit who lived in a garden. Every morning she "
     "looked for carrots under the big tree. One day she found a golden carrot, and she shared it with her "
     "friends."),
    ("What is a week?", "A week is seven days long. It starts on Monday, goes through Tuesday, Wednesday, "
     "Thursday and Friday, and ends with the weekend, Saturday and Sunday."),
    ("Tell me about the moon.", "The moon goes around the earth about once a month. It has no light of its own: "
     "it shines because the sun lights it up. Sometimes it looks full and round, and sometimes like a thin line."),
    ("How do plants grow?", "Plants grow from seeds. They need water, light from the sun, and good soil. Their "
     "roots drink the water, and their leaves turn sunlight into food."),
    ("Tell me about dogs.", "Dogs are friendly animals and they love to play. They can learn many tricks, like "
     "sitting or fetching a ball. Some dogs even help people at work."),
    ("What are the seasons?", "There are four seasons: spring, summer, autumn and winter. In spring the flowers "
     "come out, summer is warm, in autumn the leaves fall, and winter is cold."),
)
